"""The golden record of a person: one Patient built from its source records by survivorship rules
(data/survivorship.json), linked to every source with Patient.link type ``seealso`` (PMIR style).

It is computed, not stored, and always from the source records the reader may read (each goes through
the store's read steps): a source record's change shows at once, nothing needs rewriting after a link,
unlink or merge, and a golden record can never show a reader an identifier or phone from a record that
consent or scope hides from them (a stored one, aggregated once for everybody, would).

Its id is the person's id in the master index (``golden-…``, never a stored Patient's id), so
``Patient/[golden id]/$everything`` is the whole person and ``Patient/[golden id]/$empi-golden`` the
record itself.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from changbai.errors import Gone, InvalidInput, NotFound
from changbai.identity.normalise import normalise_patient

if TYPE_CHECKING:
    from changbai.store.repository import Unit

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
        "meta": {"lastUpdated": (recent[-1].get("meta") or {}).get("lastUpdated"), "tag": [GOLDEN_TAG]},
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
    golden["meta"] = {k: v for k, v in golden["meta"].items() if v}
    golden["link"] = [{"other": {"reference": f"Patient/{r['id']}"}, "type": "seealso"} for r in recent]
    return golden


def _without_period(item: Any) -> Any:
    return {k: v for k, v in item.items() if k not in ("period", "rank")} if isinstance(item, dict) else item


def person_view(unit: Unit, person: str, records: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The golden record of ``person`` and the ids of its ``records`` that the unit's reader may read
    (each read through the store's read steps); NotFound when the reader may read none of them."""
    sources: list[dict[str, Any]] = []
    for rec in records:
        try:
            resource = unit.read("Patient", rec).resource
        except (NotFound, Gone):
            continue
        if resource:
            sources.append(resource)
    if not sources:
        raise NotFound(f"Patient/{person} is not known")
    return golden_record(person, sources), [s["id"] for s in sources]
