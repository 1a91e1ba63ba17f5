"""Accounts: people who sign in with a password (Argon2 hashes) and systems that sign in with a key
(SMART Backend Services). Repeated wrong passwords lock an account for a while."""

from __future__ import annotations

import functools
import json
import secrets
from contextlib import suppress
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update

from changbai.errors import Conflict, InvalidInput, NotFound
from changbai.security import tables as st
from changbai.security.policy import Policy, now_ms
from changbai.store.database import Database

MAX_FAILURES = 5
LOCK_MS = 15 * 60 * 1000
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so timing does not tell who exists; made on
    first use (hashing takes a quarter of a second, which every command and server start paid)."""
    return _hasher.hash("not a password")


def new_password() -> str:
    return secrets.token_urlsafe(12)


def check_username(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or not all(c.isalnum() or c in "-_.@" for c in name):
        raise InvalidInput("A username is 1-100 letters, digits or - _ . @")
    return name


def add_account(
    db: Database,
    policy: Policy,
    username: str,
    role: str,
    *,
    password: str | None = None,
    kind: str = "user",
    jwks: dict[str, Any] | None = None,
    redirect_uris: list[str] | None = None,
    scopes: str | None = None,
    organization: str | None = None,
    practitioner: str | None = None,
    patient: str | None = None,
    region: str | None = None,
    display: str = "",
) -> None:
    check_username(username)
    policy.role(role)
    if region is not None and not (len(region) == 6 and region.isdigit()):
        raise InvalidInput("A region is a 6-digit GB/T 2260 code (county, city 2201 00, province 22 0000)")
    with db.write() as conn:
        if conn.execute(select(st.account.c.username).where(st.account.c.username == username)).first():
            raise Conflict(f"The account '{username}' exists already")
        conn.execute(
            insert(st.account).values(
                username=username,
                kind=kind,
                role=role,
                display=display,
                password_hash=_hasher.hash(password) if password else None,
                jwks=json.dumps(jwks) if jwks else None,
                redirect_uris=json.dumps(redirect_uris) if redirect_uris else None,
                scopes=scopes,
                organization=organization,
                practitioner=practitioner,
                patient=patient,
                region=region,
                failures=0,
                locked_until=0,
                active=True,
                created=now_ms(),
            )
        )


def get_account(db: Database, username: str) -> dict[str, Any] | None:
    with db.read() as conn:
        row = conn.execute(select(st.account).where(st.account.c.username == username)).first()
    return dict(row._mapping) if row else None


def list_accounts(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(st.account).order_by(st.account.c.username))]


def set_password(db: Database, username: str, password: str) -> None:
    with db.write() as conn:
        done = conn.execute(
            update(st.account)
            .where(st.account.c.username == username)
            .values(password_hash=_hasher.hash(password), failures=0, locked_until=0)
        )
        if done.rowcount != 1:
            raise NotFound(f"No account '{username}'")


class SignInFailed(Exception):
    def __init__(self, reason: str, locked: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.locked = locked


def authenticate(db: Database, username: str, password: str) -> dict[str, Any]:
    """The account, when the password is right and the account is neither locked nor a system."""
    now = now_ms()
    failure: SignInFailed | None = None
    with db.write() as conn:  # failures are counted and committed before the error is raised
        row = conn.execute(select(st.account).where(st.account.c.username == username)).first()
        if row is None or row.kind != "user" or not row.password_hash or not row.active:
            with suppress(VerificationError):
                _hasher.verify(_dummy_hash(), password or "x")
            failure = SignInFailed("wrong username or password")
        elif row.locked_until > now:
            failure = SignInFailed("account locked after repeated failures; try again later", locked=True)
        else:
            try:
                _hasher.verify(row.password_hash, password)
            except (VerificationError, InvalidHashError):
                failures = row.failures + 1
                locked = now + LOCK_MS if failures >= MAX_FAILURES else 0
                conn.execute(
                    update(st.account)
                    .where(st.account.c.username == username)
                    .values(failures=0 if locked else failures, locked_until=locked)
                )
                failure = SignInFailed(
                    "wrong username or password" + ("; the account is now locked" if locked else ""),
                    locked=bool(locked),
                )
            else:
                if row.failures:
                    conn.execute(update(st.account).where(st.account.c.username == username).values(failures=0))
    if failure is not None:
        raise failure
    assert row is not None
    return dict(row._mapping)


def setup(db: Database, policy: Policy) -> str | None:
    """First start: create the operator account ``admin`` and return its password (shown once)."""
    if get_account(db, "admin") is not None:
        return None
    password = new_password()
    add_account(db, policy, "admin", "operator", password=password, display="平台管理员 Platform administrator")
    add_account(
        db,
        policy,
        "changbai-web",
        "operator",
        kind="client",
        redirect_uris=["/auth/done"],
        scopes="openid fhirUser offline_access user/*.cruds patient/*.cruds",
        display="Changbai web pages (public client, PKCE)",
    )
    return password
