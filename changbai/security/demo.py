"""Demo accounts for every role, bound to real records of the demo data (the first facility, practitioner
and resident found), so that each role shows what it can and cannot see."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import orjson
from joserfc.jwk import ECKey
from sqlalchemy import and_, select

from changbai.errors import ChangbaiError
from changbai.security import policy as pol
from changbai.security.accounts import add_account, get_account, new_password, set_password
from changbai.store import schema as t

if TYPE_CHECKING:
    from changbai.api.app import Platform


def _first(platform: Platform, rtype: str) -> dict[str, Any] | None:
    r, v = t.resource.c, t.resource_version.c
    with platform.db.read() as conn:
        row = conn.execute(
            select(v.content)
            .join_from(t.resource, t.resource_version, and_(v.rid == r.rid, v.version == r.version))
            .where(r.rtype == rtype, r.deleted.is_(False))
            .order_by(r.rid)
            .limit(1)
        ).first()
    return orjson.loads(row[0]) if row and row[0] else None


def _referenced(platform: Platform, reference: Any, rtype: str) -> dict[str, Any] | None:
    """The stored resource a ``Reference`` of type ``rtype`` names; None for anything else."""
    ref = (reference or {}).get("reference") if isinstance(reference, dict) else None
    kind, _, id = (ref or "").partition("/")
    if kind != rtype or not id:
        return None
    try:
        return platform.repo.read(rtype, id).resource
    except ChangbaiError:  # not stored, deleted, or not a valid id
        return None


def create_demo_accounts(platform: Platform) -> list[tuple[str, str, str]]:
    from changbai.security.enforcement import Security

    sec = platform.security or Security(platform)
    # the facility, doctor and resident of a real encounter, so the clinician's facility has treated
    # someone (the first Organization of the demo province is an insurer, which treats nobody)
    encounter = _first(platform, "Encounter") or {}
    org = _referenced(platform, encounter.get("serviceProvider"), "Organization") or {"id": "demo-org"}
    doctors = [p.get("individual") for p in encounter.get("participant") or []]
    practitioner = next(
        (found for ref in doctors if (found := _referenced(platform, ref, "Practitioner")) is not None),
        _first(platform, "Practitioner") or {"id": "demo-practitioner"},
    )
    patient = _referenced(platform, encounter.get("subject"), "Patient") or {"id": "demo-patient"}
    county = pol.division_of(org) or "220102"
    city, province = county[:4] + "00", county[:2] + "0000"
    people = [
        ("demo-resident", "resident", {"patient": patient["id"]}),
        ("demo-clinician", "clinician", {"organization": org["id"], "practitioner": practitioner["id"]}),
        ("demo-nurse", "nurse", {"organization": org["id"]}),
        ("demo-pharmacist", "pharmacist", {"organization": org["id"]}),
        ("demo-family-doctor", "family_doctor", {"organization": org["id"], "practitioner": practitioner["id"]}),
        ("demo-facility-admin", "facility_admin", {"organization": org["id"]}),
        ("demo-cdc-county", "public_health", {"region": county}),
        ("demo-insurer-city", "insurer", {"region": city}),
        ("demo-regulator", "regulator", {"region": province}),
        ("demo-operator", "operator", {}),
        ("demo-researcher", "researcher", {}),
        ("demo-auditor", "auditor", {}),
    ]
    out = []
    for username, role, attrs in people:
        password = new_password()
        if get_account(sec.db, username) is None:
            add_account(sec.db, sec.policy, username, role, password=password, **attrs)
        else:
            set_password(sec.db, username, password)
        out.append((username, password, role))
    key_file = sec.keys.dir / "demo-integration.jwk.json"
    if get_account(sec.db, "demo-integration") is None:
        key = ECKey.generate_key("P-384", private=True, auto_kid=True)
        key_file.write_text(json.dumps(key.as_dict(private=True)))
        key_file.chmod(0o600)
        public = {**key.as_dict(private=False), "alg": "ES384", "use": "sig"}
        add_account(
            sec.db,
            sec.policy,
            "demo-integration",
            "integration",
            kind="client",
            jwks={"keys": [public]},
            organization=org["id"],
        )
    out.append(("demo-integration", f"(private key: {key_file})", "integration"))
    return out
