"""Codes from HL7's own code systems are real codes with their official displays (checked against the
CodeSystems of the official R4 package, when it is present)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from changbai.synth import generate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(os.environ.get("CHANGBAI_FHIR_EXAMPLES", ROOT / ".cache/hl7.fhir.r4.examples/package"))


def code_systems() -> dict[str, dict[str, str | None]]:
    if not (EXAMPLES / "package.json").exists():
        pytest.skip(f"hl7.fhir.r4.examples not found at {EXAMPLES} (./run test fetches it with npm)")
    systems: dict[str, dict[str, str | None]] = {}
    for path in EXAMPLES.glob("CodeSystem-*.json"):
        cs = json.loads(path.read_text(encoding="utf-8"))
        concepts: dict[str, str | None] = {}
        stack = list(cs.get("concept", []))
        while stack:
            c = stack.pop()
            concepts[c["code"]] = c.get("display")
            stack.extend(c.get("concept", []))
        if concepts and "url" in cs:
            systems[cs["url"]] = concepts
    return systems


def test_hl7_codes_and_displays_are_official(tmp_path):
    systems = code_systems()
    generate(tmp_path, 150, 3)
    wrong: list[tuple[str, str, Any]] = []
    checked = 0

    def visit(node: Any) -> None:
        nonlocal checked
        if isinstance(node, dict):
            concepts = systems.get(node.get("system", ""))
            if concepts is not None and "code" in node:
                checked += 1
                if node["code"] not in concepts:
                    wrong.append((node["system"], node["code"], "unknown code"))
                elif "display" in node and node["display"] != concepts[node["code"]]:
                    wrong.append((node["system"], node["code"], node["display"]))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for path in sorted(tmp_path.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            visit(orjson.loads(line))
    assert checked > 1000
    assert wrong == []
