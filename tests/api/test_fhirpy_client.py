"""A real FHIR client (fhirpy, from PyPI) works against the server: create, read, search, update, delete."""

from __future__ import annotations

import pytest


def test_fhirpy_crud_and_search(server):
    fhirpy = pytest.importorskip("fhirpy")
    client = fhirpy.SyncFHIRClient(server.fhir)
    patient = client.resource(
        "Patient", name=[{"family": "金", "given": ["美兰"]}], gender="female", birthDate="1985-06-01"
    )
    patient.save()
    assert patient.id
    fetched = client.reference("Patient", patient.id).to_resource()
    assert fetched["name"][0]["family"] == "金"
    found = client.resources("Patient").search(family="金", birthdate="1985-06-01").fetch_all()
    assert [p.id for p in found] == [patient.id]
    fetched["gender"] = "male"
    fetched.save()
    assert client.reference("Patient", patient.id).to_resource()["gender"] == "male"
    assert fetched["meta"]["versionId"] == "2"
    fetched.delete()
    assert client.resources("Patient").search(family="金").fetch_all() == []
