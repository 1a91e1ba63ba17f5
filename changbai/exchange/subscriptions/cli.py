"""`changbai subscriptions status|dead-letters|replay` and `changbai federation status|key|children`: the
operator view and node enrolment from the command line, on the node's own database and key files (the
same functions as the HTTP operator API)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from changbai.settings import override


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("subscriptions", help="subscription delivery queue and dead letters")
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    s.add_parser("status", help="queue depth, delivered, dead letters per subscription").set_defaults(handler=status)
    d = s.add_parser("dead-letters", help="list notifications that could not be delivered")
    d.add_argument("--subscription", help="only this subscription's")
    d.set_defaults(handler=dead_letters)
    r = s.add_parser("replay", help="put dead letters back in the queue")
    r.add_argument("ids", nargs="*", type=int, help="dead-letter ids (default: all)")
    r.add_argument("--subscription", help="only this subscription's")
    r.set_defaults(handler=replay)

    f = sub.add_parser("federation", help="node federation")
    f.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    fs = f.add_subparsers(dest="action", metavar="ACTION")
    fs.required = True
    fs.add_parser("status", help="this node, its links, lag and failures").set_defaults(handler=federation_status)
    k = fs.add_parser("key", help="this node's public JWK set for its parent (creates the key pair if missing)")
    k.add_argument("--out", type=Path, help="write the JWK set to this file (default: print it)")
    k.set_defaults(handler=federation_key)
    c = fs.add_parser("children", help="child nodes registered here (SMART Backend Services clients)")
    cs = c.add_subparsers(dest="children_action", metavar="ACTION")
    cs.required = True
    ca = cs.add_parser("add", help="register a child node with its public JWK set")
    ca.add_argument("node_id", help="the child's node id (CHANGBAI_NODE_ID there): its client id here")
    ca.add_argument("--jwks", type=Path, required=True, help="the child's `changbai federation key` output")
    ca.add_argument("--region", help="the child's GB/T 2260 region code")
    ca.add_argument("--scopes", help="what it may ask for (default: the node role's, system/*.cud)")
    ca.set_defaults(handler=children_add)
    cs.add_parser("list", help="list registered child nodes").set_defaults(handler=children_list)


def _db(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from changbai.store.database import Database

    settings = override(database_url=args.database)
    return settings, Database(settings.resolved_database_url())


def status(args: argparse.Namespace) -> int:
    from changbai.exchange.subscriptions import admin

    _, db = _db(args)
    print(json.dumps(admin.status(db), indent=2, ensure_ascii=False))
    return 0


def dead_letters(args: argparse.Namespace) -> int:
    from changbai.exchange.subscriptions import admin

    _, db = _db(args)
    rows = admin.dead_letters(db, args.subscription)
    for r in rows:
        print(f"{r['id']}\t{r['subscription']}\tevent {r['event']}\t{r['action']} {r['resource']}\t{r['lastError']}")
    print(f"{len(rows)} dead letter(s)")
    return 0


def replay(args: argparse.Namespace) -> int:
    from changbai.exchange.subscriptions import admin

    _, db = _db(args)
    count = admin.replay(db, args.ids or None, args.subscription)
    print(f"{count} notification(s) back in the queue")
    return 0


def federation_status(args: argparse.Namespace) -> int:
    from changbai.exchange.federation.node import node_from_settings
    from changbai.exchange.federation.operations import link_status
    from changbai.store.repository import Repository

    settings, db = _db(args)
    print(json.dumps(link_status(Repository(db), node_from_settings(settings)), indent=2, ensure_ascii=False))
    return 0


def federation_key(args: argparse.Namespace) -> int:
    from changbai.exchange.federation.credentials import key_path, load_or_create_key, public_jwks

    settings = override(database_url=args.database)
    text = json.dumps(public_jwks(load_or_create_key(key_path(settings))), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}: register it at the parent with `changbai federation children add`")
    else:
        print(text)
    return 0


def children_add(args: argparse.Namespace) -> int:
    from changbai.errors import InvalidInput
    from changbai.exchange.federation.enrol import register_child

    _, db = _db(args)
    try:
        jwks = json.loads(args.jwks.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"Cannot read the JWK set {args.jwks}: {exc}") from None
    register_child(db, args.node_id, jwks, scopes=args.scopes, region=args.region)
    print(f"registered child node {args.node_id}")
    return 0


def children_list(args: argparse.Namespace) -> int:
    from changbai.exchange.federation.enrol import children

    _, db = _db(args)
    for c in children(db):
        print(f"{c['node']}\t{c['region'] or ''}\t{'active' if c['active'] else 'inactive'}\t{c['scopes'] or ''}")
    return 0
