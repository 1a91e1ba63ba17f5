"""Access tokens (ES384 JWTs signed with the node's key), client assertions (SMART Backend Services),
authorisation codes with PKCE and rotating refresh tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, insert, select, update

from changbai.errors import Unauthorized
from changbai.security import tables as st
from changbai.security.keys import KeyStore
from changbai.security.policy import now_ms
from changbai.store.database import Database

ACCESS_SECONDS = 15 * 60
CODE_SECONDS = 120
REFRESH_SECONDS = 12 * 3600
ASSERTION_MAX_SECONDS = 5 * 60
CLIENT_ALGS = ["RS384", "ES384"]
MAX_TOKEN_CHARS = 8192
REVOCATION_CHECK_SECONDS = 2.0


class OAuthError(Exception):
    """An RFC 6749 error: ``error`` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Tokens:
    def __init__(self, db: Database, keys: KeyStore, issuer: str = "changbai") -> None:
        self.db = db
        self.keys = keys
        self.issuer = issuer
        #: verified signatures: token -> claims (expiry, audience and revocation are still checked each time)
        self._verified: dict[str, dict[str, Any]] = {}
        #: jti -> when it was last found not revoked (revocations made here apply at once; those made by
        #: another process within REVOCATION_CHECK_SECONDS)
        self._not_revoked: dict[str, float] = {}

    # --------------------------------------------------------------------------------- access tokens
    def issue(
        self,
        account: dict[str, Any],
        scope: str,
        audience: str,
        *,
        client_id: str = "",
        seconds: int = ACCESS_SECONDS,
        purpose: str | None = None,
    ) -> tuple[str, int]:
        """A signed access token. ``purpose``: the v3 PurposeOfUse code the holder acts with (the launch
        context; the caller has checked that the account's role may act with it)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account["username"],
            "aud": audience,
            "iat": now,
            "exp": now + seconds,
            "jti": secrets.token_urlsafe(16),
            "scope": scope,
            "role": account["role"],
            "client_id": client_id or account["username"],
            "kind": account["kind"],
        }
        for key in ("organization", "practitioner", "patient", "region"):
            if account.get(key):
                claims[key] = account[key]
        if purpose:
            claims["purpose_of_use"] = purpose
        if account.get("practitioner"):
            claims["fhirUser"] = f"Practitioner/{account['practitioner']}"
        elif account.get("patient") and account["role"] == "resident":
            claims["fhirUser"] = f"Patient/{account['patient']}"
        key = self.keys.signing_key
        token = jwt.encode({"alg": "ES384", "typ": "JWT", "kid": key.kid}, claims, key, algorithms=["ES384"])
        return token, seconds

    def verify(self, token: str, audience: str | None) -> dict[str, Any]:
        """The claims of a valid token, or Unauthorized saying what is wrong."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise Unauthorized("The access token is malformed")
        claims = self._verified.get(token)
        if claims is None:
            try:
                claims = jwt.decode(token, self.keys.verification_keys(), algorithms=["ES384"]).claims
            except (JoseError, ValueError, KeyError, TypeError):
                raise Unauthorized("The access token is not valid (bad signature, unknown key or malformed)") from None
            if len(self._verified) > 5000:
                self._verified.clear()
            self._verified[token] = claims
        now = time.time()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise Unauthorized("The access token has expired")
        if claims.get("iss") != self.issuer:
            raise Unauthorized("The access token was not issued by this platform")
        if audience is not None and claims.get("aud") != audience:
            raise Unauthorized(f"The access token is for another audience, not {audience}")
        if self.is_revoked(str(claims.get("jti", ""))):
            raise Unauthorized("The access token has been revoked")
        return claims

    def decode_unchecked_expiry(self, token: str) -> dict[str, Any] | None:
        """Claims of a token signed by us, whatever its expiry (introspection, revocation)."""
        try:
            return jwt.decode(token, self.keys.verification_keys(), algorithms=["ES384"]).claims
        except (JoseError, ValueError, KeyError, TypeError):
            return None

    def revoke_jti(self, jti: str, expires_s: int) -> None:
        self._not_revoked.pop(jti, None)
        with self.db.write() as conn:
            key = f"revoked:{jti}"
            if not conn.execute(select(st.jti.c.jti).where(st.jti.c.jti == key)).first():
                conn.execute(insert(st.jti).values(jti=key, expires=expires_s * 1000))

    def is_revoked(self, jti: str) -> bool:
        now = time.monotonic()
        checked = self._not_revoked.get(jti)
        if checked is not None and now - checked < REVOCATION_CHECK_SECONDS:
            return False
        with self.db.read() as conn:
            revoked = conn.execute(select(st.jti.c.jti).where(st.jti.c.jti == f"revoked:{jti}")).first() is not None
        if not revoked:
            if len(self._not_revoked) > 20000:
                self._not_revoked.clear()
            self._not_revoked[jti] = now
        return revoked

    # ----------------------------------------------------------------------------- client assertions
    def verify_assertion(self, assertion: str, token_url: str) -> dict[str, Any]:
        """SMART Backend Services: a JWT signed by the client's registered key (RS384/ES384), for our
        token endpoint, short-lived, never seen before. Returns the client's account."""
        if not assertion or len(assertion) > MAX_TOKEN_CHARS or assertion.count(".") != 2:
            raise OAuthError("invalid_client", "client_assertion is malformed", 401)
        try:
            header = json.loads(_b64(assertion.split(".")[0]))
            unverified = json.loads(_b64(assertion.split(".")[1]))
        except (ValueError, UnicodeDecodeError):
            raise OAuthError("invalid_client", "client_assertion is malformed", 401) from None
        if not isinstance(header, dict) or header.get("alg") not in CLIENT_ALGS:
            raise OAuthError("invalid_client", f"client_assertion must be signed with {' or '.join(CLIENT_ALGS)}", 401)
        client_id = unverified.get("iss") if isinstance(unverified, dict) else None
        from changbai.security.accounts import get_account

        account = get_account(self.db, client_id) if isinstance(client_id, str) and len(client_id) <= 100 else None
        if account is None or account["kind"] != "client" or not account["jwks"] or not account["active"]:
            raise OAuthError("invalid_client", "Unknown client or no registered key", 401)
        try:
            keyset = KeySet.import_key_set(json.loads(account["jwks"]))
            claims = jwt.decode(assertion, keyset, algorithms=CLIENT_ALGS).claims
        except (JoseError, ValueError, KeyError, TypeError):
            raise OAuthError("invalid_client", "client_assertion signature does not verify", 401) from None
        now = time.time()
        exp = claims.get("exp")
        if claims.get("sub") != client_id:
            raise OAuthError("invalid_client", "client_assertion iss and sub must both be the client_id", 401)
        aud = claims.get("aud")
        if aud != token_url and not (isinstance(aud, list) and token_url in aud):
            raise OAuthError("invalid_client", f"client_assertion aud must be {token_url}", 401)
        if not isinstance(exp, int) or exp <= now:
            raise OAuthError("invalid_client", "client_assertion has expired", 401)
        if exp > now + ASSERTION_MAX_SECONDS:
            raise OAuthError("invalid_client", "client_assertion exp is more than 5 minutes ahead", 401)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 150:
            raise OAuthError("invalid_client", "client_assertion needs a jti", 401)
        key = f"assertion:{client_id}:{jti}"
        with self.db.write() as conn:
            conn.execute(delete(st.jti).where(st.jti.c.expires < now_ms(), st.jti.c.jti.like("assertion:%")))
            if conn.execute(select(st.jti.c.jti).where(st.jti.c.jti == key)).first():
                raise OAuthError("invalid_client", "client_assertion jti was used before (replay)", 401)
            conn.execute(insert(st.jti).values(jti=key, expires=exp * 1000))
        return account

    # ------------------------------------------------------------------------ codes, refresh tokens
    def new_grant(
        self,
        kind: str,
        username: str,
        client_id: str,
        scope: str,
        *,
        redirect_uri: str | None = None,
        challenge: str | None = None,
        family: str | None = None,
    ) -> str:
        value = secrets.token_urlsafe(32)
        seconds = CODE_SECONDS if kind == "code" else REFRESH_SECONDS
        with self.db.write() as conn:
            conn.execute(
                insert(st.grant).values(
                    digest=digest(value),
                    kind=kind,
                    username=username,
                    client_id=client_id,
                    scope=scope,
                    redirect_uri=redirect_uri,
                    challenge=challenge,
                    family=family or secrets.token_hex(16),
                    expires=now_ms() + seconds * 1000,
                    used=False,
                )
            )
        return value

    def use_grant(self, kind: str, value: str, client_id: str) -> dict[str, Any]:
        """Consume a code or refresh token once. Reusing one revokes its family (stolen token)."""
        g = st.grant.c
        with self.db.write() as conn:
            row = conn.execute(select(st.grant).where(g.digest == digest(value or ""), g.kind == kind)).first()
            if row is None or row.client_id != client_id:
                raise OAuthError("invalid_grant", f"Unknown {kind}")
            reused = bool(row.used)
            if reused:  # committed before the error is raised
                conn.execute(update(st.grant).where(g.family == row.family).values(used=True))
            else:
                if row.expires < now_ms():
                    raise OAuthError("invalid_grant", f"This {kind} has expired")
                conn.execute(update(st.grant).where(g.digest == row.digest).values(used=True))
        if reused:
            raise OAuthError("invalid_grant", f"This {kind} was used before; its family is revoked")
        return dict(row._mapping)

    def revoke_refresh(self, value: str) -> bool:
        g = st.grant.c
        with self.db.write() as conn:
            row = conn.execute(select(st.grant).where(g.digest == digest(value), g.kind == "refresh")).first()
            if row is None:
                return False
            conn.execute(update(st.grant).where(g.family == row.family).values(used=True))
            return True

    def refresh_active(self, value: str) -> dict[str, Any] | None:
        g = st.grant.c
        with self.db.read() as conn:
            row = conn.execute(select(st.grant).where(g.digest == digest(value), g.kind == "refresh")).first()
        if row is None or row.used or row.expires < now_ms():
            return None
        return dict(row._mapping)


def pkce_matches(verifier: str, challenge: str) -> bool:
    if not 43 <= len(verifier) <= 128:
        return False
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return secrets.compare_digest(computed, challenge)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
