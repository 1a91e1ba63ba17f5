"""The `changbai` command. Each module contributes its sub-commands through a `register(subparsers)`
function in its own `cli.py`, listed in COMMAND_MODULES; this file only dispatches and turns errors into
clear messages (never a traceback)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from changbai import __version__, logs
from changbai.errors import ChangbaiError

COMMAND_MODULES = [
    "changbai.store.cli",
    "changbai.api.cli",
    "changbai.exchange.cli",
    "changbai.synth.cli",
    "changbai.exchange.subscriptions.cli",
    "changbai.demo",
    "changbai.identity.cli",
    "changbai.security.cli",
    "changbai.terminology.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="changbai", description="Changbai regional health information platform")
    parser.add_argument("--version", action="version", version=f"changbai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from changbai.settings import get_settings

    settings = get_settings()
    logs.setup(settings.log_level, settings.log_json)
    try:
        return int(args.handler(args) or 0)
    except ChangbaiError as exc:
        for issue in exc.issues:
            where = f" (at {', '.join(issue.expression)})" if issue.expression else ""
            print(f"changbai: {issue.severity}: {issue.diagnostics}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so plainly; the traceback goes to the debug log only
        logs.get("changbai.cli").debug("unhandled error", exc_info=True)
        print(
            f"changbai: internal error: {type(exc).__name__}: {exc} (run with CHANGBAI_LOG_LEVEL=DEBUG for details)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
