"""`changbai demo`: a synthetic Jilin province, loaded and served, for a first look.

On first run it generates a small province (changbai.synth), loads it through the bulk path (the same
write pipeline as the API), creates the demo accounts when the security module is installed, then
serves the platform. Later runs find the province loaded and start serving at once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sqlalchemy import func, select

from changbai import logs
from changbai.settings import override

log = logs.get(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="generate, load and serve a synthetic Jilin province")
    p.add_argument("--residents", type=int, default=2000, help="size of the province on first run")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    p.add_argument("--no-serve", action="store_true", help="prepare the province and stop")
    p.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from changbai.api.app import create_platform
    from changbai.store import schema
    from changbai.store.bulk import load_directory, ndjson_files

    console = Console(stderr=True)
    settings = override(host=args.host, port=args.port, database_url=args.database)
    start = time.perf_counter()
    platform = create_platform(settings)
    with platform.db.read() as conn:
        patients = conn.execute(
            select(func.count()).select_from(schema.resource).where(schema.resource.c.rtype == "Patient")
        ).scalar_one()
    if patients == 0:
        from changbai.synth import generate

        out = Path(settings.data_dir) / "demo-province"
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("generating the province (residents)", total=args.residents)
            generate(out, residents=args.residents, seed=args.seed, progress=lambda n: bar.update(task, completed=n))
            lines = sum(1 for f in ndjson_files(out) for line in f.open("rb") if line.strip())
            load = bar.add_task("loading it into the platform", total=lines)
            report = load_directory(platform.repo, out, progress=lambda n: bar.advance(load, n))
        if report.errors:
            for err in report.errors[:10]:
                console.print(f"[red]rejected[/red] {err['file']}:{err['line']}: {err['error']}")
        from changbai.terminology.content import load as load_terminology

        codes = load_terminology(platform.repo)  # ICD-10, national value domains ... (after the province's own)
        console.print(
            f"province loaded: {report.created + report.updated + report.unchanged:,} resources "
            f"and {codes} terminology resources in {time.perf_counter() - start:.0f} s"
        )
    accounts = _demo_accounts(platform)
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"\n[bold]Changbai demo[/bold] is ready: [link]{base}/[/link]")
    console.print(f"  FHIR API        {base}/fhir  (capabilities: {base}/fhir/metadata)")
    if accounts:
        console.print("  demo accounts (user / password / role):")
        for user, password, role in accounts:
            console.print(f"    {user:<22} {password:<18} {role}")
    if args.no_serve:
        return 0
    import uvicorn

    uvicorn.run(platform.build_app(), host=settings.host, port=settings.port, log_level="warning", access_log=False)
    return 0


def _demo_accounts(platform: object) -> list[tuple[str, str, str]]:
    """The demo accounts of every role, when the security module is installed."""
    try:
        from changbai.security import create_demo_accounts  # type: ignore[attr-defined]
    except ImportError:
        return []
    return list(create_demo_accounts(platform))
