"""FHIR operations of the master index: Patient/$match (scored candidates with match-grade), PIXm
Patient/$ihe-pix (every identifier and record of the same person), and the operator's decisions:
Patient/$empi-link, $empi-unlink, $empi-not-duplicate, $empi-review (the review queue) and
Patient/[id]/$empi-history (the link history of a record) and Patient/[id]/$empi-golden (the person's
golden record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from changbai.errors import InvalidInput, NotFound
from changbai.fhir import validation
from changbai.identity.normalise import normalise_patient
from changbai.identity.registry import Registry, registry_of

if TYPE_CHECKING:
    from changbai.api.router import FhirRequest, FhirResponse, Operation, Router
    from changbai.store.repository import Unit

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def _params(params: dict[str, Any] | None, name: str) -> list[Any]:
    out = []
    for p in (params or {}).get("parameter", []):
        if p.get("name") == name:
            if "resource" in p:
                out.append(p["resource"])
            else:
                out.extend(v for k, v in p.items() if k.startswith("value"))
    return out


def _one(params: dict[str, Any] | None, name: str) -> Any:
    values = _params(params, name)
    return values[0] if values else None


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def match_op(
    router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
) -> FhirResponse:
    """Patient/$match: candidates for the given Patient, best first, with score and match-grade."""
    from changbai.api.router import FhirResponse

    resource = _one(params, "resource")
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        raise InvalidInput("$match needs a Patient in the 'resource' parameter", expression="Parameters")
    validation.check(resource)  # a malformed Patient is a clear 400, not a failed match
    count = _one(params, "count")
    only_certain = _flag(_one(params, "onlyCertainMatches"))
    patient = normalise_patient(resource, key=str(resource.get("id") or ""))
    results = registry_of(unit).matcher.match(patient, minimum="review")
    if only_certain:
        results = [r for r in results if r.grade == "certain"]
    if count is not None:
        try:
            results = results[: max(int(count), 0)]
        except ValueError as exc:
            raise InvalidInput("count must be an integer", expression="Parameters.parameter") from exc
    base = unit.ctx.base_url.rstrip("/")
    entries = []
    for r in results:
        try:
            stored = unit.read("Patient", r.key)
        except NotFound:
            continue
        entries.append(
            {
                "fullUrl": f"{base}/Patient/{r.key}",
                "resource": stored.resource,
                "search": {
                    "extension": [{"url": MATCH_GRADE, "valueCode": r.grade}],
                    "mode": "match",
                    "score": round(r.probability, 6),
                },
            }
        )
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return FhirResponse(200, bundle)


def pix_op(
    router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
) -> FhirResponse:
    """Patient/$ihe-pix (IHE PIXm): sourceIdentifier=system|value in; every identifier and Patient of
    the same person out (targetIdentifier, targetId), optionally only those of ``targetSystem``."""
    from changbai.api.router import FhirResponse

    source = _one(params, "sourceIdentifier")
    if isinstance(source, dict):
        source = f"{source.get('system', '')}|{source.get('value', '')}"
    if not isinstance(source, str) or "|" not in source or not source.split("|", 1)[1]:
        raise InvalidInput("$ihe-pix needs sourceIdentifier=system|value", expression="sourceIdentifier")
    systems = set(_params(params, "targetSystem"))
    found = _by_identifier(unit, source)
    if not found:
        raise NotFound(f"No Patient has the identifier {source}")
    registry = registry_of(unit)
    records: list[str] = []
    for pid in found:
        person = registry.person_of(pid)
        for rec in registry.records_of(person) if person else [pid]:
            if rec not in records:
                records.append(rec)
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for rec in records:
        resource = unit.read("Patient", rec).resource or {}
        for ident in resource.get("identifier") or []:
            key = (ident.get("system", ""), ident.get("value", ""))
            if key in seen or (systems and key[0] not in systems):
                continue
            seen.add(key)
            out.append({"name": "targetIdentifier", "valueIdentifier": ident})
        if not systems:
            out.append({"name": "targetId", "valueReference": {"reference": f"Patient/{rec}"}})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": out})


def _by_identifier(unit: Unit, token: str) -> list[str]:
    result = unit.search("Patient", [("identifier", token), ("_count", "100")])
    return [m.id for m in result.matches]


def _patient_param(params: dict[str, Any] | None, name: str) -> str:
    value = _one(params, name)
    if isinstance(value, dict):
        value = value.get("reference")
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"missing parameter '{name}' (a Patient id or reference)", expression=name)
    return value.removeprefix("Patient/")


def _actor(unit: Unit) -> str | None:
    principal = unit.ctx.principal
    return str(getattr(principal, "subject", None) or principal) if principal is not None else None


def _link_result(registry: Registry, patient: str) -> dict[str, Any]:
    person = registry.person_of(patient) or patient
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "person", "valueString": person},
            *({"name": "record", "valueReference": {"reference": f"Patient/{r}"}} for r in registry.records_of(person)),
        ],
    }


LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"


def _provenance(unit: Unit, activity: str, patients: list[str], reason: str = "") -> None:
    """A Provenance for an operator's decision on the master index (who, when, which records)."""
    from datetime import UTC, datetime

    actor = _actor(unit) or "changbai master patient index"
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Patient/{p}"} for p in dict.fromkeys(patients)],
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "activity": {"coding": [{"system": LIFECYCLE, "code": activity}]},
        "agent": [{"who": {"display": actor}}],
    }
    if reason:
        resource["reason"] = [{"text": reason}]
    unit.create(resource)


def link_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/$empi-link: patient=<id>, other=<id>: the same person (a reviewer's decision)."""
    from changbai.api.router import FhirResponse

    registry = registry_of(unit)
    patient = _patient_param(params, "patient")
    other = _patient_param(params, "other")
    registry.link(patient, other, _actor(unit))
    _provenance(unit, "link", [patient, other])
    return FhirResponse(200, _link_result(registry, patient))


def unlink_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/$empi-unlink: patient=<id>: give the record a person of its own again."""
    from changbai.api.router import FhirResponse

    registry = registry_of(unit)
    patient = _patient_param(params, "patient")
    registry.unlink(patient, _actor(unit))
    _provenance(unit, "unlink", [patient])
    return FhirResponse(200, _link_result(registry, patient))


def distinct_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/$empi-not-duplicate: patient=<id>, other=<id>: different people, for good."""
    from changbai.api.router import FhirResponse

    registry = registry_of(unit)
    patient = _patient_param(params, "patient")
    other = _patient_param(params, "other")
    registry.not_duplicate(patient, other, _actor(unit))
    _provenance(unit, "unlink", [patient, other], "not a duplicate")
    return FhirResponse(200, _link_result(registry, patient))


def merge_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/$empi-merge: source=<id>, target=<id>: the source's person joins the target's; the
    returned ``merge`` id undoes it with $empi-unmerge."""
    from changbai.api.router import FhirResponse

    registry = registry_of(unit)
    source, target = _patient_param(params, "source"), _patient_param(params, "target")
    merge_id = registry.merge(source, target, _actor(unit))
    _provenance(unit, "merge", [target, *registry.records_of(registry.person_of(target) or target)], merge_id)
    result = _link_result(registry, target)
    result["parameter"].insert(0, {"name": "merge", "valueString": merge_id})
    return FhirResponse(200, result)


def unmerge_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/$empi-unmerge: merge=<id from $empi-merge>: every record back to the person it had."""
    from changbai.api.router import FhirResponse

    merge_id = _one(params, "merge")
    if not isinstance(merge_id, str) or not merge_id:
        raise InvalidInput("missing parameter 'merge' (the id $empi-merge returned)", expression="merge")
    registry = registry_of(unit)
    moved = registry.unmerge(merge_id, _actor(unit))
    _provenance(unit, "unmerge", moved, merge_id)
    return FhirResponse(200, _link_result(registry, moved[0]))


def review_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/$empi-review: the open possible matches (status=open|linked|distinct), oldest first."""
    from changbai.api.router import FhirResponse

    status = _one(params, "status") or "open"
    items = registry_of(unit).review_queue(str(status))
    parts = [
        {
            "name": "item",
            "part": [
                {"name": "patient", "valueReference": {"reference": f"Patient/{i['patient']}"}},
                {"name": "candidate", "valueReference": {"reference": f"Patient/{i['candidate']}"}},
                {"name": "probability", "valueDecimal": round(i["probability"], 6)},
                {"name": "status", "valueCode": i["status"]},
                *({"name": f"level-{k}", "valueCode": v} for k, v in i["levels"].items()),
            ],
        }
        for i in items
    ]
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": parts})


def history_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/[id]/$empi-history: every link decision about this record, oldest first."""
    from changbai.api.router import FhirResponse

    assert id is not None
    events = registry_of(unit).history(id)
    parts = [
        {
            "name": "event",
            "part": [
                {"name": k, "valueString": str(v)} for k, v in e.items() if v is not None and k not in ("seq", "detail")
            ],
        }
        for e in events
    ]
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": parts})


def operations() -> list[Operation]:
    from changbai.api.router import Operation

    return [
        Operation(
            "match",
            match_op,
            types=("Patient",),
            type_level=True,
            definition="http://hl7.org/fhir/OperationDefinition/Patient-match",
        ),
        Operation(
            "ihe-pix",
            pix_op,
            types=("Patient",),
            type_level=True,
            definition="https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
        ),
        Operation("empi-link", link_op, types=("Patient",), type_level=True, affects_state=True),
        Operation("empi-unlink", unlink_op, types=("Patient",), type_level=True, affects_state=True),
        Operation("empi-not-duplicate", distinct_op, types=("Patient",), type_level=True, affects_state=True),
        Operation("empi-merge", merge_op, types=("Patient",), type_level=True, affects_state=True),
        Operation("empi-unmerge", unmerge_op, types=("Patient",), type_level=True, affects_state=True),
        Operation("empi-review", review_op, types=("Patient",), type_level=True),
        Operation("empi-history", history_op, types=("Patient",), instance=True),
        Operation("empi-golden", golden_op, types=("Patient",), instance=True),
    ]


def golden_op(router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: Any) -> Any:
    """Patient/[id]/$empi-golden: the golden record of the person a source record belongs to, or of the
    person whose golden id this is; built from the source records the reader may read."""
    from changbai.api.router import FhirResponse
    from changbai.identity.golden import person_view

    assert id is not None
    registry = registry_of(unit)
    if unit.exists("Patient", id) or not registry.records_of(id):
        unit.read("Patient", id)  # 404 / 410 (or refused) as a read would
        person = registry.person_of(id) or id
    else:
        person = id
    golden, _ = person_view(unit, person, registry.records_of(person) or [id])
    return FhirResponse(200, golden)
