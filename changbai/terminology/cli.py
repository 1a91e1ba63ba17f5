"""`changbai terminology load | lookup | map-suggest | map-confirm`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from changbai.settings import override


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("terminology", help="the terminology service: shipped content, local code maps")
    tsub = p.add_subparsers(dest="terminology_command", metavar="ACTION")
    tsub.required = True

    load = tsub.add_parser("load", help="load the shipped code systems, value sets and maps into the store")
    load.add_argument("--database", help="database URL (default: SQLite file in ./var/)")
    load.set_defaults(handler=load_cmd)

    lookup = tsub.add_parser("lookup", help="look a code up in the shipped content")
    lookup.add_argument("system", help="code system url, e.g. http://hl7.org/fhir/sid/icd-10")
    lookup.add_argument("code")
    lookup.set_defaults(handler=lookup_cmd)

    suggest = tsub.add_parser("map-suggest", help="suggest target codes for a facility's local code list")
    suggest.add_argument("local_csv", type=Path, help="CSV with columns code,name")
    suggest.add_argument("--target", required=True, help="target code system url")
    suggest.add_argument("--top", type=int, default=3)
    suggest.add_argument("--out", type=Path, help="write the suggestions CSV here (default: stdout)")
    suggest.set_defaults(handler=suggest_cmd)

    confirm = tsub.add_parser("map-confirm", help="build the facility's ConceptMap from reviewed suggestions")
    confirm.add_argument("suggestions_csv", type=Path)
    confirm.add_argument("--facility", required=True)
    confirm.add_argument("--target", required=True, help="target code system url")
    confirm.add_argument("--out", type=Path, help="write the ConceptMap JSON here (default: stdout)")
    confirm.set_defaults(handler=confirm_cmd)


def load_cmd(args: argparse.Namespace) -> int:
    from changbai.api.app import create_platform
    from changbai.terminology.content import load

    settings = override(database_url=args.database)
    platform = create_platform(settings, extensions=[])
    count = load(platform.repo)
    print(f"loaded {count} terminology resources")
    return 0


def _target(url: str):  # type: ignore[no-untyped-def]
    from changbai.errors import NotFound
    from changbai.terminology.binding import shipped_source
    from changbai.terminology.expand import load_index

    index = load_index(shipped_source(), url, None)
    if index is None:
        raise NotFound(f"No shipped code system has the url {url}")
    return index


def lookup_cmd(args: argparse.Namespace) -> int:
    from changbai.terminology.binding import shipped_source
    from changbai.terminology.operations import lookup

    answer = lookup(shipped_source(), {"system": args.system, "code": args.code})
    print(json.dumps(answer, ensure_ascii=False, indent=2))
    return 0


def suggest_cmd(args: argparse.Namespace) -> int:
    from changbai.terminology.localmaps import read_local_codes, suggest, suggestions_csv

    text = suggestions_csv(suggest(read_local_codes(args.local_csv), _target(args.target), args.top))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def confirm_cmd(args: argparse.Namespace) -> int:
    from changbai.terminology.localmaps import concept_map, confirmed_rows

    rows = confirmed_rows(args.suggestions_csv.read_text(encoding="utf-8"))
    cm = concept_map(args.facility, _target(args.target), rows)
    text = json.dumps(cm, ensure_ascii=False, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0
