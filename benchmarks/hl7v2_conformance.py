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

from changbai.exchange import conformance, er7, v2fhir

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "testdata" / "hl7v2"


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
            row["compare"] = conformance.compare(mapped.bundle, reference)
            row["baseline"] = conformance.compare(reference, reference)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_type[row["type"].split("^")[0] + "^" + row["type"].split("^")[-1] if "^" in row["type"] else "?"].append(row)
    head = "| message type | messages | mapped | compared | " + " | ".join(conformance.ASPECTS) + " |"
    lines = [head, "|" + " --- |" * (4 + len(conformance.ASPECTS))]

    def cells(group: list[dict], key: str) -> list[str]:
        counts = conformance.merge_counts(r[key] for r in group if r[key])
        return [f"{h}/{w} ({100 * h // w}%)" if w else "-" for h, w in (counts[a] for a in conformance.ASPECTS)]

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
    args = parser.parse_args(argv)
    rows = run(args.messages, args.expected)
    print(table(rows))
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
