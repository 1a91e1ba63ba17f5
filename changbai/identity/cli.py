"""`changbai empi ...`: fit the match model, show it, dedupe a file of Patients."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from changbai.errors import InvalidInput
from changbai.fhir import validation


def register(subparsers: Any) -> None:
    empi = subparsers.add_parser("empi", help="resident master index: model, batch dedupe")
    sub = empi.add_subparsers(dest="empi_command", metavar="ACTION")
    sub.required = True

    fit = sub.add_parser("fit", help="estimate the match model by EM (from Patients, or simulated ones)")
    fit.add_argument("--patients", type=Path, help="NDJSON file of Patients (default: simulate residents)")
    fit.add_argument("--simulate", type=int, default=30000, help="residents to simulate when no file is given")
    fit.add_argument("--version", required=True, help="version label written into the model")
    fit.add_argument("--out", type=Path, required=True, help="where to write the model JSON")
    fit.set_defaults(handler=_fit)

    show = sub.add_parser("model", help="print the match model in use (levels, m, u, weights, thresholds)")
    show.add_argument("--model", type=Path)
    show.set_defaults(handler=_show)

    rematch = sub.add_parser("rematch", help="re-link every Patient in the store under the current model")
    rematch.add_argument("--model", type=Path, help="model file (default: the shipped one)")
    rematch.set_defaults(handler=_rematch)

    dedupe = sub.add_parser("dedupe", help="cluster an NDJSON file of Patients into persons (Splink)")
    dedupe.add_argument("patients", type=Path)
    dedupe.add_argument("--model", type=Path)
    dedupe.set_defaults(handler=_dedupe)


def _read_patients(path: Path) -> list[dict[str, Any]]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            resource = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{n}: not JSON: {exc.msg}") from exc
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            raise InvalidInput(f"{path}:{n}: not a Patient")
        errors = [i for i in validation.validate(resource) if i.severity in ("error", "fatal")]
        if errors:
            raise InvalidInput(f"{path}:{n}: {errors[0].diagnostics}", expression=errors[0].expression)
        out.append(resource)
    return out


def _fit(args: argparse.Namespace) -> int:
    from changbai.identity import blocking, model, simulate, training
    from changbai.identity.normalise import normalise_patient

    if args.patients:
        records = _read_patients(args.patients)
        source = str(args.patients)
    else:
        records, _ = simulate.population(args.simulate, seed=101)
        source = f"changbai.identity.simulate population({args.simulate}, seed=101)"
    rows = [blocking.blocking_row(normalise_patient(r, key=str(r.get("id") or i))) for i, r in enumerate(records)]
    fitted = training.fit(rows, model.blank(args.version), version=args.version)
    fitted.trained_on["source"] = source
    fitted.save(args.out)
    print(f"wrote {args.out}: {len(rows)} records, {fitted.trained_on['blocked_pairs']} blocked pairs")
    return 0


def _show(args: argparse.Namespace) -> int:
    from changbai.identity import model

    print(json.dumps(model.load(args.model).to_json(), ensure_ascii=False, indent=2))
    return 0


def _rematch(args: argparse.Namespace) -> int:
    from changbai.identity import model
    from changbai.identity.registry import rematch
    from changbai.settings import get_settings
    from changbai.store.database import Database
    from changbai.store.repository import Repository

    db = Database(get_settings().resolved_database_url())
    try:
        counts = rematch(Repository(db), model.load(args.model) if args.model else None)
    finally:
        db.dispose()
    print(
        f"rematched {counts['patients']} Patients into {counts['persons']} persons; "
        f"{counts['replayed']} decisions of people replayed"
    )
    return 0


def _dedupe(args: argparse.Namespace) -> int:
    from changbai.identity import model
    from changbai.identity.batch import dedupe

    clusters = dedupe(_read_patients(args.patients), model.load(args.model) if args.model else None)
    for cluster in clusters:
        sys.stdout.write(json.dumps(cluster) + "\n")
    return 0
