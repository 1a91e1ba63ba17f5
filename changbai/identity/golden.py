"""The golden record of a person: one Patient built from its source records by survivorship rules
(data/survivorship.json), linked to every source with Patient.link type ``seealso`` (PMIR style).

It is computed, not stored: a source record's change shows at once and nothing needs rewriting after a
link, unlink or merge.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from importlib import resources
from typing import Any

from changbai.errors import InvalidInput
from changbai.identity.normalise import normalise_patient

RULES = ("union", "resident-id-first", "most-frequent", "most-recent")
GOLDEN_TAG = {"system": "https://changbai.example/fhir/CodeSystem/empi", "code": "golden-record"}


@lru_cache(maxsize=1)
def survivorship() -> dict[str, str]:
    text = resources.files("changbai.identity").joinpath("data/survivorship.json").read_text(encoding="utf-8")
    elements = dict(json.loads(text)["elements"])
    bad = {k: v for k, v in elements.items() if v not in RULES}
    if bad:
        raise InvalidInput(f"survivorship rules not known: {bad}")
    return elements


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def golden_record(person: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The golden Patient of ``person`` from its source Patients (each with id and meta.lastUpdated)."""
    if not sources:
        raise InvalidInput(f"person {person} has no source records")
    recent = sorted(sources, key=lambda r: ((r.get("meta") or {}).get("lastUpdated", ""), r.get("id", "")))
    trusted = [r for r in recent if normalise_patient(r).id_valid]
    golden: dict[str, Any] = {
        "resourceType": "Patient",
        "id": person,
        "meta": {"tag": [GOLDEN_TAG]},
        "active": True,
    }
    for element, rule in survivorship().items():
        values = [r[element] for r in recent if r.get(element) not in (None, [], "")]
        if not values:
            continue
        if rule == "union":
            merged: dict[str, Any] = {}
            for v in values:
                for item in v if isinstance(v, list) else [v]:
                    merged.setdefault(_key(_without_period(item)), item)
            golden[element] = list(merged.values())
        elif rule == "most-recent":
            golden[element] = values[-1]
        elif rule == "resident-id-first" and any(r.get(element) not in (None, [], "") for r in trusted):
            golden[element] = [r[element] for r in trusted if r.get(element) not in (None, [], "")][-1]
        else:  # most-frequent (and resident-id-first without a valid ID); ties go to the most recent
            counts = Counter(_key(v) for v in values)
            best = max(range(len(values)), key=lambda i: (counts[_key(values[i])], i))
            golden[element] = values[best]
    golden["link"] = [{"other": {"reference": f"Patient/{r['id']}"}, "type": "seealso"} for r in recent]
    return golden


def _without_period(item: Any) -> Any:
    return {k: v for k, v in item.items() if k not in ("period", "rank")} if isinstance(item, dict) else item
