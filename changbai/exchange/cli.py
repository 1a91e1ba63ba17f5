"""`changbai mllp` (the HL7 v2 listener on its own) and `changbai inbox list|show|replay` (dead letters)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path

from changbai.errors import InvalidInput
from changbai.settings import get_settings, override


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mllp", help="run the HL7 v2 MLLP listener")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="MLLP port (default 2575)")
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    p.set_defaults(handler=mllp)

    p = sub.add_parser("inbox", help="inbound messages and their outcomes; inspect and replay failures")
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    inbox_sub = p.add_subparsers(dest="inbox_command", metavar="ACTION")
    inbox_sub.required = True
    q = inbox_sub.add_parser("list", help="list messages (newest first)")
    q.add_argument("--status", choices=["accepted", "error", "rejected"], help="only this outcome")
    q.add_argument("--failed", action="store_true", help="only errors and rejections (the dead letters)")
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(handler=inbox_list)
    q = inbox_sub.add_parser("show", help="show one message: raw text, outcome, ACK")
    q.add_argument("id", type=int)
    q.set_defaults(handler=inbox_show)
    q = inbox_sub.add_parser("replay", help="process a stored message again (optionally a corrected file)")
    q.add_argument("id", type=int)
    q.add_argument("--file", type=Path, help="corrected message to process instead of the stored text")
    q.set_defaults(handler=inbox_replay)

    p = sub.add_parser("upload", help="CSV uploads for clinics: download a template, load a file")
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    up = p.add_subparsers(dest="upload_command", metavar="ACTION")
    up.required = True
    q = up.add_parser("template", help="print the CSV template (header row) of a record kind")
    q.add_argument("kind", choices=["patients", "observations", "immunizations"])
    q.set_defaults(handler=upload_template)
    q = up.add_parser("load", help="check and load a CSV file; prints the per-row report")
    q.add_argument("kind", choices=["patients", "observations", "immunizations"])
    q.add_argument("file", type=Path)
    q.add_argument("--facility", required=True, help="the uploading facility (its patient numbers' namespace)")
    q.add_argument("--mode", choices=["valid-rows", "all-or-nothing"], default="valid-rows")
    q.set_defaults(handler=upload_load)
    q = up.add_parser("cda", help="store a CDA document (C-CDA, WS/T 500) whole, with its extracted facts")
    q.add_argument("file", type=Path)
    q.set_defaults(handler=upload_cda)


def upload_cda(args: argparse.Namespace) -> int:
    from changbai.exchange.service import ingest_cda

    if not args.file.exists():
        raise InvalidInput(f"{args.file} does not exist")
    extracted = ingest_cda(_platform(args), args.file.read_bytes())
    [doc] = extracted.resources("DocumentReference")
    print(f"DocumentReference/{doc['id']}")
    for kind, n in sorted(extracted.sections.items()):
        print(f"  {kind}: {n}")
    return 0


def upload_template(args: argparse.Namespace) -> int:
    from changbai.exchange.csvupload import template

    sys.stdout.write(template(args.kind))
    return 0


def upload_load(args: argparse.Namespace) -> int:
    from changbai.exchange.service import upload_csv

    if not args.file.exists():
        raise InvalidInput(f"{args.file} does not exist")
    upload = upload_csv(_platform(args), args.kind, args.file.read_bytes(), args.facility, args.mode)
    sys.stdout.write(upload.report())
    stored = upload.accepted if upload.bundle["entry"] else 0
    print(f"{stored} row(s) stored, {upload.refused} refused", file=sys.stderr)  # the operator's summary
    return 0 if upload.refused == 0 else 1


def _platform(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from changbai.api.app import create_platform

    settings = override(database_url=getattr(args, "database", None))
    return create_platform(settings)


def _intake(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from changbai.exchange.service import build_intake

    return build_intake(_platform(args))


def mllp(args: argparse.Namespace) -> int:
    from changbai.exchange.service import run_listener

    settings = override(host=args.host, mllp_port=args.port, database_url=args.database)
    platform = _platform(argparse.Namespace(database=None))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_listener(platform, settings.host, settings.mllp_port or get_settings().mllp_port))
    return 0


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def inbox_list(args: argparse.Namespace) -> int:
    intake = _intake(args)
    rows = intake.store.list(None if args.failed else args.status, args.limit * (4 if args.failed else 1))
    if args.failed:
        rows = [r for r in rows if r.status in ("error", "rejected")][: args.limit]
    print(f"{'id':>6}  {'received (UTC)':19}  {'status':8}  {'ack':3}  {'event':10}  {'sender':30}  control id")
    for r in rows:
        print(
            f"{r.id:>6}  {_when(r.received_at)}  {r.status:8}  {r.ack_code:3}  {r.event:10}  "
            f"{r.sender[:30]:30}  {r.control_id}"
        )
    return 0


def inbox_show(args: argparse.Namespace) -> int:
    r = _intake(args).store.get(args.id)
    print(
        f"id {r.id}  status {r.status}  ack {r.ack_code}  attempts {r.attempts}  event {r.event}  version {r.version}"
    )
    print(f"sender {r.sender}  control id {r.control_id}  from {r.peer}  received {_when(r.received_at)} UTC")
    for p in r.problems:
        where = "-".join(str(x) for x in (p["segment"], p["field"]) if x)
        print(f"  {p['severity']} {p['code']} {where}: {p['text']}")
    print("--- message")
    print(r.raw.decode("utf-8", "replace").replace("\r", "\n").rstrip())
    print("--- ack")
    print(r.ack.replace("\r", "\n").rstrip())
    return 0


def inbox_replay(args: argparse.Namespace) -> int:
    intake = _intake(args)
    raw = None
    if args.file is not None:
        if not args.file.exists():
            raise InvalidInput(f"{args.file} does not exist")
        raw = args.file.read_bytes()
    ack = intake.replay(args.id, raw).decode("utf-8", "replace")
    print(ack.replace("\r", "\n").rstrip())
    code = ack.split("\r")[1].split(ack[3])[1] if "\r" in ack else ""
    print(f"outcome: {code}", file=sys.stderr)
    return 0 if code == "AA" else 1
