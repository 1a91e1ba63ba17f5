"""A secured sample platform for the console's tests, screenshots and benchmark: a synthetic province
(changbai.synth) loaded through the write pipeline, the master index installed, and one account per role
bound to real records: a resident, a clinician at a facility that treats them, clinicians at two facilities
that do not, a platform operator."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from changbai.settings import Settings

#: The password of every sample account (a sample, never a real node).
PASSWORD = "console-sample-password-1"


@dataclass
class World:
    platform: Any
    province: Path
    patient: dict[str, Any]  # the resident who signs in
    home_org: str  # a facility that treats them
    other_org: str  # a facility that does not
    third_org: str  # another that does not
    accounts: dict[str, str] = field(default_factory=dict)  # username -> role


def _read(province: Path, rtype: str, limit: int | None = None) -> list[dict[str, Any]]:
    out = []
    with (province / f"{rtype}.ndjson").open("rb") as f:
        for line in f:
            if line.strip():
                out.append(orjson.loads(line))
                if limit is not None and len(out) >= limit:
                    break
    return out


def build_world(tmp: Path, residents: int = 100, seed: int = 11) -> World:
    """Generate a province under ``tmp``, load it into a secured SQLite platform there and add the accounts."""
    from changbai.api.app import create_platform
    from changbai.security import first_start
    from changbai.store.bulk import load_directory
    from changbai.synth import generate

    province = tmp / "province"
    generate(province, residents=residents, seed=seed)
    settings = Settings(data_dir=tmp / "var", database_url=f"sqlite:///{tmp / 'console.db'}", security=True)
    platform = create_platform(settings)
    report = load_directory(platform.repo, province)
    assert not report.errors, report.errors[:3]
    first_start(platform.security)
    return open_world(platform, province)


def open_world(platform: Any, province: Path) -> World:
    """The sample accounts on a platform already holding ``province`` (loaded by :func:`build_world` or by
    ``changbai load``): the resident with the most encounters, a clinician at the facility that treats them
    most, clinicians at the two busiest facilities that never have, an operator. The first time, it also
    adds possible duplicates for the review queue; later times it finds the same people again."""
    from changbai.security.accounts import add_account, get_account

    encounters = _read(province, "Encounter")
    per_patient = Counter(e["subject"]["reference"].split("/")[1] for e in encounters)
    pid = per_patient.most_common(1)[0][0]
    theirs = Counter(
        e["serviceProvider"]["reference"].split("/")[1]
        for e in encounters
        if e["subject"]["reference"] == f"Patient/{pid}" and e.get("serviceProvider")
    )
    patients = _read(province, "Patient")
    patient = next(p for p in patients if p["id"] == pid)
    patients_of: dict[str, set[str]] = {}
    for e in encounters:
        if e.get("serviceProvider"):
            patients_of.setdefault(e["serviceProvider"]["reference"].split("/")[1], set()).add(
                e["subject"]["reference"]
            )
    home = theirs.most_common(1)[0][0]
    others = [o for o, ps in sorted(patients_of.items(), key=lambda x: -len(x[1])) if f"Patient/{pid}" not in ps]
    sec = platform.security
    world = World(platform, province, patient, home, others[0], others[1])
    practitioners = [p["id"] for p in _read(province, "Practitioner", 3)]
    people = [
        ("resident", "resident", {"patient": pid}),
        ("doctor-home", "clinician", {"organization": home, "practitioner": practitioners[0]}),
        ("doctor-other", "clinician", {"organization": others[0], "practitioner": practitioners[1]}),
        ("doctor-er", "clinician", {"organization": others[1], "practitioner": practitioners[2]}),
        ("ops", "operator", {}),
    ]
    if get_account(sec.db, "resident") is None:
        add_possible_duplicates(platform, patients[:40])
    for username, role, attrs in people:
        if get_account(sec.db, username) is None:
            add_account(sec.db, sec.policy, username, role, password=PASSWORD, display=username, **attrs)
        world.accounts[username] = role
    return world


def add_possible_duplicates(platform: Any, patients: list[dict[str, Any]], wanted: int = 4) -> int:
    """Records the master index should put in its review queue: a resident registered again at another
    facility without the ID number and with a new phone (same name, birth date and address)."""
    from changbai.api.router import FhirRequest
    from changbai.store.pipeline import Context

    made = 0
    for p in patients:
        if made >= wanted or p["id"].startswith("pat-d"):
            continue
        copy = {k: v for k, v in p.items() if k not in ("id", "identifier", "telecom", "meta")}
        copy["telecom"] = [{"system": "phone", "value": f"1390000{made:04d}", "use": "mobile"}]
        name = dict(copy["name"][0])
        given = (name.get("given") or [""])[0]
        if len(given) < 2:
            continue
        name["given"] = [given[:-1] + ("华" if given[-1] != "华" else "明")]  # a clerk's typo in the given name
        name["text"] = name.get("family", "") + name["given"][0]
        copy["name"] = [name]
        copy["birthDate"] = copy["birthDate"][:8] + f"{(int(copy['birthDate'][8:]) % 28) + 1:02d}"
        resp = platform.router.handle(FhirRequest("POST", "Patient", body=copy), Context(source="cli"))
        assert resp.status == 201, resp.body
        made += 1
    return made
