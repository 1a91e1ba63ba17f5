"""`changbai serve`: run the platform's HTTP API (and the listeners the modules add)."""

from __future__ import annotations

import argparse

from changbai import logs
from changbai.settings import override

log = logs.get(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the platform (FHIR API at /fhir)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from changbai.api.app import create_app

    settings = override(host=args.host, port=args.port, database_url=args.database)
    app = create_app(settings)
    logs.event(
        log,
        "serving",
        url=f"http://{settings.host}:{settings.port}/fhir",
        database=settings.resolved_database_url().split("@")[-1],
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    return 0
