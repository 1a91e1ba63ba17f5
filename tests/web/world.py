"""A secured platform for the console's tests and screenshots: a small synthetic province (changbai.synth)
loaded through the write pipeline, the master index installed, and one account per role bound to real
records: a resident, a clinician at a facility that treats them, one at a facility that does not."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from changbai.settings import Settings

PASSWORD = "console-test-password-1"


@dataclass
class World:
    platform: Any
    province: Path
    patient: dict[str, Any]  # the resident who signs in
    home_org: str  # a facility that treats them
    other_org: str  # a facility that does not
    accounts: dict[str, str] = field(default_factory=dict)  # username -> role


def _read(province: Path, rtype: str) -> list[dict[str, Any]]:
    path = province / f"{rtype}.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def build_world(tmp: Path, residents: int = 100, seed: int = 11) -> World:
    from changbai.api.app import create_platform, default_extensions
    from changbai.identity.install import install as identity_install
    from changbai.security.accounts import add_account
    from changbai.store.bulk import load_directory
    from changbai.synth import generate

    province = tmp / "province"
    generate(province, residents=residents, seed=seed)
    settings = Settings(data_dir=tmp / "var", database_url=f"sqlite:///{tmp / 'console.db'}", security=True)
    extensions = default_extensions()
    if identity_install not in extensions:
        extensions.insert(0, identity_install)
    platform = create_platform(settings, extensions=extensions)
    report = load_directory(platform.repo, province)
    assert not report.errors, report.errors[:3]
    from changbai.security import first_start

    first_start(platform.security)
    # the resident with the most encounters; a facility that treats them and one that never has
    encounters = _read(province, "Encounter")
    per_patient = Counter(e["subject"]["reference"].split("/")[1] for e in encounters)
    pid = per_patient.most_common(1)[0][0]
    theirs = Counter(
        e["serviceProvider"]["reference"].split("/")[1]
        for e in encounters
        if e["subject"]["reference"] == f"Patient/{pid}" and e.get("serviceProvider")
    )
    patient = next(p for p in _read(province, "Patient") if p["id"] == pid)
    patients_of: dict[str, set[str]] = {}
    for e in encounters:
        if e.get("serviceProvider"):
            patients_of.setdefault(e["serviceProvider"]["reference"].split("/")[1], set()).add(
                e["subject"]["reference"]
            )
    home = theirs.most_common(1)[0][0]
    other = next(o for o, ps in sorted(patients_of.items(), key=lambda x: -len(x[1])) if f"Patient/{pid}" not in ps)
    sec = platform.security
    world = World(platform, province, patient, home, other)
    practitioners = [p["id"] for p in _read(province, "Practitioner")[:3]]
    people = [
        ("resident", "resident", {"patient": pid}),
        ("doctor-home", "clinician", {"organization": home, "practitioner": practitioners[0]}),
        ("doctor-other", "clinician", {"organization": other, "practitioner": practitioners[1]}),
        ("ops", "operator", {}),
    ]
    for username, role, attrs in people:
        add_account(sec.db, sec.policy, username, role, password=PASSWORD, display=username, **attrs)
        world.accounts[username] = role
    return world
