"""A secured platform with a small province: three hospitals in two cities, residents treated at each,
staff of every role, and helpers that mint their access tokens."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from changbai.settings import Settings
from changbai.store.pipeline import Context
from tests.conftest import LiveServer, free_port

DIV = "https://changbai.example/fhir/StructureDefinition/address-division"
GB2260 = "https://changbai.example/fhir/CodeSystem/gb-t-2260"
RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"


def address(code: str, use: str = "work") -> dict[str, Any]:
    return {"use": use, "extension": [{"url": DIV, "valueCoding": {"system": GB2260, "code": code}}]}


def org(id: str, county: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": id, "name": id, "address": [address(county)]}


def patient(id: str, county: str, id_number: str, phone: str, gp: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"system": RESIDENT_ID, "value": id_number}],
        "telecom": [{"system": "phone", "value": phone}],
        "name": [{"text": f"resident {id}"}],
        "address": [address(county, "home")],
    }
    if gp:
        res["generalPractitioner"] = [{"reference": gp}]
    return res


def observation(id: str, pid: str, hosp: str, code: str = "8867-4") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "performer": [{"reference": f"Organization/{hosp}"}],
        "valueQuantity": {"value": 72, "unit": "/min"},
    }


def condition(id: str, pid: str, hosp: str, icd: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id,
        "meta": {"source": f"https://his.example/Organization/{hosp}"},
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": icd}]},
    }


#: hospA and hospB are in Changchun (220100: counties 220102, 220103); hospC in Jilin city (220202).
WORLD = [
    org("hospA", "220102"),
    org("hospB", "220103"),
    org("hospC", "220202"),
    {"resourceType": "Practitioner", "id": "drA", "name": [{"text": "Dr A"}]},
    {"resourceType": "Practitioner", "id": "drB", "name": [{"text": "Dr B"}]},
    {"resourceType": "Practitioner", "id": "drF", "name": [{"text": "Dr F (family doctor)"}]},
    patient("p1", "220102", "220102199001011234", "13812345678", gp="Practitioner/drF"),
    patient("p2", "220202", "220202198505052345", "13987654321"),
    observation("obs1", "p1", "hospA"),
    observation("obs2", "p2", "hospC"),
    condition("psy1", "p1", "hospA", "F32.1"),
    {
        "resourceType": "Encounter",
        "id": "enc1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "serviceProvider": {"reference": "Organization/hospA"},
    },
]

ACCOUNTS: dict[str, dict[str, Any]] = {
    "resident1": {"role": "resident", "patient": "p1"},
    "resident2": {"role": "resident", "patient": "p2"},
    "clinA": {"role": "clinician", "organization": "hospA", "practitioner": "drA"},
    "clinB": {"role": "clinician", "organization": "hospB", "practitioner": "drB"},
    "clinC": {"role": "clinician", "organization": "hospC"},
    "nurseA": {"role": "nurse", "organization": "hospA"},
    "pharmA": {"role": "pharmacist", "organization": "hospA"},
    "famdocF": {"role": "family_doctor", "organization": "hospB", "practitioner": "drF"},
    "adminA": {"role": "facility_admin", "organization": "hospA"},
    "cdc220102": {"role": "public_health", "region": "220102"},
    "cdc220202": {"role": "public_health", "region": "220202"},
    "cdcCity220100": {"role": "public_health", "region": "220100"},
    "insurer220100": {"role": "insurer", "region": "220100"},
    "regulatorProv": {"role": "regulator", "region": "220000"},
    "operator1": {"role": "operator"},
    "researcher1": {"role": "researcher"},
    "auditor1": {"role": "auditor"},
    "hisA": {"role": "integration", "organization": "hospA", "kind": "client"},
    "node220102": {"role": "node", "region": "220102", "kind": "client"},
}


@dataclass
class World:
    platform: Any
    server: LiveServer
    sec: Any

    @property
    def fhir(self) -> str:
        return self.server.fhir

    def token(
        self,
        username: str,
        scope: str | None = None,
        *,
        audience: str | None = None,
        seconds: int = 600,
        purpose: str | None = None,
    ) -> str:
        from changbai.security.accounts import get_account

        account = get_account(self.sec.db, username)
        assert account is not None
        role = self.sec.policy.role(account["role"])
        scope = scope or " ".join(str(s) for s in role.scopes)
        return self.sec.issue_token(account, scope, audience or self.fhir, seconds=seconds, purpose=purpose)[0]

    def client(self, username: str | None, **kw: Any) -> httpx.Client:
        headers = {"accept": "application/fhir+json"}
        if username:
            headers["authorization"] = f"Bearer {self.token(username, **kw)}"
        return httpx.Client(base_url=self.fhir, headers=headers, timeout=60)

    def get(self, username: str, path: str, **params: Any) -> httpx.Response:
        with self.client(username) as c:
            return c.get(path, params=params)


def consent(
    pid: str,
    actor: str | None = None,
    exclude: list[str] | None = None,
    end: str = "2099-01-01",
    purposes: list[str] | None = None,
) -> dict[str, Any]:
    """A resident's authorisation: for a named reader (``actor``) or for purposes of use (``purposes``),
    for a period, optionally without some sensitive categories (``exclude``)."""
    provision: dict[str, Any] = {"type": "permit", "period": {"start": "2020-01-01", "end": end}}
    if actor:
        participation = {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
        provision["actor"] = [{"role": {"coding": [participation]}, "reference": {"reference": actor}}]
    if purposes:
        provision["purpose"] = [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p} for p in purposes
        ]
    if exclude:
        labels = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": c} for c in exclude]
        provision["provision"] = [{"type": "deny", "securityLabel": labels}]
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "provision": provision,
    }


def secure_settings(tmp_path: Path, database_url: str, **kw: Any) -> Settings:
    kw.setdefault("mllp_port", 0)  # no HL7 v2 listener: tests run side by side
    return Settings(data_dir=tmp_path / "var", database_url=database_url, security=True, **kw)


def seed(platform: Any) -> None:
    from changbai.security.accounts import add_account

    with platform.repo.unit(Context(source="system")) as unit:
        for resource in WORLD:
            unit.update(resource["resourceType"], resource["id"], copy.deepcopy(resource))
    sec = platform.security
    for username, attrs in ACCOUNTS.items():
        attrs = dict(attrs)
        kind = attrs.pop("kind", "user")
        add_account(
            sec.db, sec.policy, username, attrs.pop("role"), password=f"pw-{username}-secret", kind=kind, **attrs
        )


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    from changbai.api.app import create_platform

    platform = create_platform(secure_settings(tmp_path, database_url))
    seed(platform)
    live = LiveServer(platform.build_app(), free_port()).start()
    yield World(platform, live, platform.security)
    live.stop()
    platform.db.dispose()
