"""Security commands for the node's own machine: `changbai setup`, `users`, `clients`, `token`, `keys`,
`audit`. They read the keys in data_dir/keys, so they are as powerful as local administrator access."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("setup", help="first-time setup: keys and the operator account 'admin'")
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    p.set_defaults(handler=cmd_setup)

    users = sub.add_parser("users", help="operator and staff accounts").add_subparsers(dest="users_cmd", required=True)
    add = users.add_parser("add", help="add a person's account (prints a new password unless --password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, help="a role of data/roles.json (clinician, resident, operator ...)")
    add.add_argument("--password", help="the password (default: a random one, printed once)")
    add.add_argument("--organization", help="the facility (Organization id) the person works for")
    add.add_argument("--practitioner", help="the person's Practitioner id")
    add.add_argument("--patient", help="a resident's own Patient id")
    add.add_argument("--region", help="an officer's area: 6-digit GB/T 2260 code")
    add.add_argument("--display", default="", help="name to show")
    add.add_argument("--database")
    add.set_defaults(handler=cmd_users_add)
    ls = users.add_parser("list", help="list accounts")
    ls.add_argument("--database")
    ls.set_defaults(handler=cmd_users_list)
    pw = users.add_parser("passwd", help="set a new random password (printed once)")
    pw.add_argument("username")
    pw.add_argument("--database")
    pw.set_defaults(handler=cmd_users_passwd)

    clients = sub.add_parser("clients", help="system clients (SMART Backend Services)").add_subparsers(
        dest="clients_cmd", required=True
    )
    cadd = clients.add_parser("add", help="register a system client with its public JWK set")
    cadd.add_argument("client_id")
    cadd.add_argument("--jwks", required=True, type=Path, help="file with the client's public JWK set")
    cadd.add_argument("--role", default="integration")
    cadd.add_argument("--organization", help="the facility the system sends for")
    cadd.add_argument("--region")
    cadd.add_argument("--scopes", help="scopes it may ask for (default: its role's)")
    cadd.add_argument("--database")
    cadd.set_defaults(handler=cmd_clients_add)

    tok = sub.add_parser("token", help="print a short-lived access token for an account (local admin only)")
    tok.add_argument("username")
    tok.add_argument("--scope", help="scopes (default: everything the account's role allows)")
    tok.add_argument("--audience", help="the FHIR base URL the token is for (default: this node's)")
    tok.add_argument("--minutes", type=int, default=15)
    tok.add_argument("--purpose", help="the v3 PurposeOfUse code the token acts with (one of the role's purposes)")
    tok.add_argument("--database")
    tok.set_defaults(handler=cmd_token)

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="keys_cmd", required=True)
    rot = keys.add_parser("rotate", help="make a new signing key current (old ones still verify)")
    rot.set_defaults(handler=cmd_keys_rotate)

    btg = sub.add_parser("break-glass", help="review of break-the-glass accesses").add_subparsers(
        dest="btg_cmd", required=True
    )
    bl = btg.add_parser("list", help="emergency accesses (open for review unless --status)")
    bl.add_argument("--status", default="open", choices=["open", "reviewed", "all"])
    bl.add_argument("--as", dest="reviewer", required=True, help="the reviewer's account (a role that reviews)")
    bl.add_argument("--database")
    bl.set_defaults(handler=cmd_break_glass_list)
    br = btg.add_parser("review", help="record the outcome of one access's review")
    br.add_argument("event", type=int, help="the number of the break-the-glass event")
    br.add_argument("--outcome", required=True, choices=["justified", "not-justified"])
    br.add_argument("--comment", required=True, help="why (4 to 2000 characters)")
    br.add_argument("--as", dest="reviewer", required=True, help="the reviewer's account (a role that reviews)")
    br.add_argument("--database")
    br.set_defaults(handler=cmd_break_glass_review)

    rel = sub.add_parser("relabel", help="recompute the access labels of stored records (through the write pipeline)")
    rel.add_argument("--type", dest="rtype", help="only records of this resource type")
    rel.add_argument("--database")
    rel.set_defaults(handler=cmd_relabel)

    aud = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_cmd", required=True)
    ver = aud.add_parser("verify", help="check the hash chain: untouched, or the first broken row")
    ver.add_argument("--database")
    ver.set_defaults(handler=cmd_audit_verify)


def _security(args: argparse.Namespace) -> Any:
    from changbai.api.app import create_platform
    from changbai.security.enforcement import Security
    from changbai.settings import override

    settings = override(database_url=getattr(args, "database", None))
    platform = create_platform(settings, extensions=[])
    return Security(platform)


def cmd_setup(args: argparse.Namespace) -> int:
    from changbai.security.accounts import setup

    sec = _security(args)
    password = setup(sec.db, sec.policy)
    if password is None:
        print("changbai: already set up (the account 'admin' exists); keys are in", sec.keys.dir)
        return 0
    print(f"Operator account: admin\nPassword (shown only this once): {password}\nKeys: {sec.keys.dir}")
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    from changbai.security.accounts import add_account, new_password

    sec = _security(args)
    password = args.password or new_password()
    add_account(
        sec.db,
        sec.policy,
        args.username,
        args.role,
        password=password,
        organization=args.organization,
        practitioner=args.practitioner,
        patient=args.patient,
        region=args.region,
        display=args.display,
    )
    print(f"added {args.username} ({args.role})" + ("" if args.password else f"; password: {password}"))
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from changbai.security.accounts import list_accounts

    sec = _security(args)
    print("| username | kind | role | facility | practitioner | patient | region | locked |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for a in list_accounts(sec.db):
        cells = [
            a["username"],
            a["kind"],
            a["role"],
            a["organization"],
            a["practitioner"],
            a["patient"],
            a["region"],
            "yes" if a["locked_until"] else "",
        ]
        print("| " + " | ".join(str(c or "") for c in cells) + " |")
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    from changbai.security.accounts import new_password, set_password

    sec = _security(args)
    password = new_password()
    set_password(sec.db, args.username, password)
    print(f"new password of {args.username}: {password}")
    return 0


def cmd_clients_add(args: argparse.Namespace) -> int:
    from changbai.errors import InvalidInput
    from changbai.security.accounts import add_account

    sec = _security(args)
    try:
        jwks = json.loads(args.jwks.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"Cannot read the JWK set {args.jwks}: {exc}") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise InvalidInput("The JWK set must be a JSON object with 'keys'")
    add_account(
        sec.db,
        sec.policy,
        args.client_id,
        args.role,
        kind="client",
        jwks=jwks,
        scopes=args.scopes,
        organization=args.organization,
        region=args.region,
    )
    print(f"registered client {args.client_id} ({args.role})")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from changbai.errors import NotFound
    from changbai.security.accounts import get_account

    sec = _security(args)
    account = get_account(sec.db, args.username)
    if account is None:
        raise NotFound(f"No account '{args.username}'")
    settings = sec.platform.settings
    audience = args.audience or settings.base_url or f"http://{settings.host}:{settings.port}/fhir"
    scope = args.scope or account.get("scopes") or " ".join(str(s) for s in sec.policy.role(account["role"]).scopes)
    minutes = max(1, min(args.minutes, 60))
    token, _ = sec.issue_token(account, scope, audience.rstrip("/"), seconds=minutes * 60, purpose=args.purpose)
    print(token)
    return 0


def _reviewer(sec: Any, username: str) -> Any:
    """The reviewer's account as a principal: the CLI acts as that person, who is named in the trail."""
    from changbai.errors import NotFound
    from changbai.security.accounts import get_account

    account = get_account(sec.db, username)
    if account is None or not account["active"]:
        raise NotFound(f"No active account '{username}'")
    claims = {k: account.get(k) for k in ("organization", "practitioner", "patient", "region") if account.get(k)}
    return sec.principal({"sub": username, "role": account["role"], "scope": "", **claims})


def cmd_break_glass_list(args: argparse.Namespace) -> int:
    from changbai.security import reviews

    sec = _security(args)
    events = reviews.list_events(sec, _reviewer(sec, args.reviewer), args.status, "cli")
    print("| # | who | resident | reason | from | until | reads | review |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for e in events:
        review = e["review"]
        verdict = f"{review['outcome']} by {review['reviewer']}: {review['comment']}" if review else "open"
        cells = [e["id"], e["username"], e["patient"], e["reason"], e["started"], e["expires"], e["reads"], verdict]
        print("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return 0


def cmd_break_glass_review(args: argparse.Namespace) -> int:
    from changbai.security import reviews

    sec = _security(args)
    event = reviews.review(sec, _reviewer(sec, args.reviewer), args.event, args.outcome, args.comment, "cli")
    print(f"break-the-glass #{event['id']} ({event['username']}, {event['patient']}): {args.outcome}")
    return 0


def cmd_relabel(args: argparse.Namespace) -> int:
    from changbai.api.app import create_platform
    from changbai.errors import InvalidInput
    from changbai.fhir.spec import spec
    from changbai.security.relabel import relabel
    from changbai.settings import override

    if args.rtype is not None and args.rtype not in spec().resource_types:
        raise InvalidInput(f"Unknown resource type '{args.rtype}'", expression="--type")
    settings = override(database_url=args.database)
    if not settings.security:
        raise InvalidInput("Labels are computed by the security module: run with CHANGBAI_SECURITY=on")
    platform = create_platform(settings)

    def progress(seen: int, changed: int) -> None:
        print(f"\r{seen} records, {changed} relabelled", end="", file=sys.stderr, flush=True)

    changed = relabel(platform, args.rtype, progress)
    print(file=sys.stderr)
    print(f"relabelled {changed} records")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from changbai.security.keys import KeyStore
    from changbai.settings import get_settings

    kid = KeyStore(get_settings().data_dir / "keys").rotate()
    print(f"new signing key {kid}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    sec = _security(args)
    result = sec.trail.verify()
    if result.ok:
        print(f"audit trail intact: {result.rows} rows, chain verified")
        return 0
    print(
        f"audit trail BROKEN at row {result.broken_at}: {result.reason} ({result.rows} rows before it verified)",
        file=sys.stderr,
    )
    return 1
