"""Per-message-type agreement of our HL7 v2 -> FHIR mapping with Microsoft FHIR-Converter's output.

Run: .venv/bin/python -m benchmarks.hl7v2_conformance [--messages DIR] [--expected DIR] [--missing]
Prints a markdown table: per message type, how many messages mapped (or were refused with a reason) and,
for each aspect, reference facts matched / reference facts stated. The baseline row is the reference
compared with itself minus nothing (always 100%): it shows the counts are read the same way for both.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from benchmarks.common import TESTDATA
from changbai.exchange import conformance, er7, v2fhir

DEFAULT = TESTDATA / "hl7v2"


def _sourced(msg: er7.Message):  # type: ignore[no-untyped-def]
    """Which reference facts come from the segments we map (PID for the patient, OBX for observations).

    The reference also folds insurance persons (IN1/IN2) into Patient and makes Observations of PDA/ACC
    segments and of MDM document text; the '(from PID)' and '(from OBX)' columns leave those out."""
    pid = msg.first("PID")
    ids = {r[0][0] for n in (2, 3, 4, 19, 20) for r in (pid.reps(n) if pid else []) if r and r[0] and r[0][0]}
    names = {r[0][0].upper() for n in (5, 9) for r in (pid.reps(n) if pid else []) if r and r[0] and r[0][0]}
    obx_codes = {s.get(3, 1) for s in msg.all("OBX")} if msg.message_type != "MDM" else set()

    def keep(aspect: str, fact: tuple) -> bool:
        if aspect == "patient":
            return (
                fact[0] in ("birthDate", "gender")
                or (fact[0] == "identifier" and fact[1] in ids)
                or (fact[0] == "name" and fact[1] in names)
            )
        if aspect == "observation":
            return bool(set(fact[1]) & obx_codes)
        return True

    return keep


def run(messages: Path, expected: Path) -> list[dict]:
    rows = []
    for path in sorted(messages.glob("*.hl7")):
        row: dict = {"file": path.name, "type": "?", "outcome": "", "compare": None, "baseline": None}
        try:
            msg = er7.parse(path.read_bytes())
            row["type"] = msg.event
            mapped = v2fhir.to_bundle(msg)
            row["outcome"] = "mapped"
        except er7.HL7Error as exc:
            row["outcome"] = f"refused: {exc.message} ({exc.hl7_code})"
            rows.append(row)
            continue
        ref = expected / f"{path.stem}-expected.json"
        if ref.exists():
            reference = json.loads(ref.read_text(encoding="utf-8-sig"))
            row["compare"] = conformance.compare(mapped.bundle, reference, _sourced(msg))
            row["baseline"] = conformance.compare(reference, reference, _sourced(msg))
        rows.append(row)
    return rows


FAMILIES = {
    "ADT": "ADT",
    "BAR": "BAR/DFT",
    "DFT": "BAR/DFT",
    "ORU": "ORU/OUL",
    "OUL": "ORU/OUL",
    "VXU": "VXU",
    "ORM": "ORM/OML/OMG/REF",
    "OML": "ORM/OML/OMG/REF",
    "OMG": "ORM/OML/OMG/REF",
    "REF": "ORM/OML/OMG/REF",
    "SIU": "SIU",
    "MDM": "MDM",
    "RDE": "RDE/RDS",
    "RDS": "RDE/RDS",
}


def table(rows: list[dict], by_family: bool = False) -> str:
    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        kind = row["type"].split("^")[0] + "^" + row["type"].split("^")[-1] if "^" in row["type"] else "?"
        by_type[FAMILIES.get(kind.split("^")[0], kind) if by_family else kind].append(row)
    head = "| message type | messages | mapped | compared | " + " | ".join(conformance.COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (4 + len(conformance.COLUMNS))]

    def cells(group: list[dict], key: str) -> list[str]:
        counts = conformance.merge_counts(r[key] for r in group if r[key])
        return [f"{h}/{w} ({100 * h // w}%)" if w else "-" for h, w in (counts[a] for a in conformance.COLUMNS)]

    for name in sorted(by_type):
        group = by_type[name]
        mapped = sum(1 for r in group if r["outcome"] == "mapped")
        compared = sum(1 for r in group if r["compare"])
        lines.append(f"| {name} | {len(group)} | {mapped} | {compared} | " + " | ".join(cells(group, "compare")) + " |")
    mapped = sum(1 for r in rows if r["outcome"] == "mapped")
    compared = sum(1 for r in rows if r["compare"])
    lines.append(f"| **all** | {len(rows)} | {mapped} | {compared} | " + " | ".join(cells(rows, "compare")) + " |")
    lines.append(
        f"| baseline: reference vs itself | {len(rows)} | - | {compared} | "
        + " | ".join(cells(rows, "baseline"))
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.hl7v2_conformance", description=__doc__)
    parser.add_argument("--messages", type=Path, default=DEFAULT / "messages")
    parser.add_argument("--expected", type=Path, default=DEFAULT / "expected")
    parser.add_argument("--missing", action="store_true", help="list the reference facts we do not state")
    parser.add_argument("--families", action="store_true", help="one row per message family, not per type")
    args = parser.parse_args(argv)
    rows = run(args.messages, args.expected)
    print(table(rows, args.families))
    refused = [r for r in rows if r["outcome"] != "mapped"]
    for r in refused:
        print(f"- {r['file']}: {r['outcome']}")
    if args.missing:
        for r in rows:
            for aspect, (_, _, missing) in (r["compare"] or {}).items():
                for fact in missing:
                    print(f"  {r['file']} {aspect}: {fact}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
