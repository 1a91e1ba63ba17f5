"""`changbai load DIR`: bulk load FHIR NDJSON through the write pipeline; `changbai migrate`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from changbai.settings import override


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("load", help="bulk load a directory of FHIR NDJSON files (one per resource type)")
    p.add_argument("directory", type=Path)
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    p.add_argument("--chunk", type=int, default=1000, help="resources per transaction")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that validate and index ahead (default: one per CPU for large loads; 0: none)",
    )
    p.set_defaults(handler=load)
    m = sub.add_parser("migrate", help="bring the database schema up to date (also done on every start)")
    m.add_argument("--database", help="database URL")
    m.set_defaults(handler=migrate)


def load(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from changbai.api.app import create_platform
    from changbai.store.bulk import load_directory, ndjson_files

    settings = override(database_url=args.database)
    files = ndjson_files(args.directory)
    total = sum(1 for f in files for line in f.open("rb") if line.strip())
    platform = create_platform(settings)
    start = time.perf_counter()
    with Progress(
        TextColumn("loading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task("load", total=total)
        report = load_directory(
            platform.repo,
            args.directory,
            chunk=args.chunk,
            progress=lambda n: bar.advance(task, n),
            workers=args.workers,
        )
    elapsed = time.perf_counter() - start
    print(
        f"read {report.read}, created {report.created}, updated {report.updated}, unchanged {report.unchanged}, "
        f"errors {len(report.errors)} in {elapsed:.1f} s ({report.read / max(elapsed, 1e-9):,.0f} resources/s)"
    )
    for err in report.errors[:20]:
        print(f"  {err['file']}:{err['line']}: {err['error']}")
    return 1 if report.errors else 0


def migrate(args: argparse.Namespace) -> int:
    from changbai.store.database import Database

    settings = override(database_url=args.database)
    Database(settings.resolved_database_url())
    print("schema is up to date")
    return 0
