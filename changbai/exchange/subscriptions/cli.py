"""`changbai subscriptions status|dead-letters|replay` and `changbai federation status`: the operator view
from the command line, on the node's own database (the same functions as the HTTP operator API)."""

from __future__ import annotations

import argparse
import json

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
