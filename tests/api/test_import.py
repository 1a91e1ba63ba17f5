"""$import: NDJSON files from the import directory load through the bulk path; bad lines are named."""

from __future__ import annotations

import json


def test_import_ndjson(client, settings):
    folder = settings.data_dir / "import"
    folder.mkdir(parents=True)
    good = [{"resourceType": "Patient", "id": f"imp-{i}", "gender": "female"} for i in range(3)]
    lines = [json.dumps(r) for r in good] + ['{"resourceType": "Patient", "id": "bad", "gender": 3}', "{not json"]
    (folder / "Patient.ndjson").write_text("\n".join(lines), encoding="utf-8")
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {
                "name": "input",
                "part": [
                    {"name": "type", "valueCode": "Patient"},
                    {"name": "url", "valueUrl": f"file://{folder / 'Patient.ndjson'}"},
                ],
            },
        ],
    }
    r = client.post("/$import", json=params)
    assert r.status_code == 200, r.text
    issues = r.json()["issue"]
    assert "created 3" in issues[0]["diagnostics"] and "refused 2" in issues[0]["diagnostics"]
    assert {i["expression"][0] for i in issues[1:]} == {"Patient.ndjson:4", "Patient.ndjson:5"}
    assert client.get("/Patient").json()["total"] == 3
    again = client.post("/$import", json=params).json()["issue"][0]["diagnostics"]
    assert "unchanged 3" in again  # reruns are idempotent


def test_import_refuses_paths_outside_the_import_directory(client, tmp_path):
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "input", "part": [{"name": "url", "valueUrl": "file:///etc/passwd"}]}],
    }
    r = client.post("/$import", json=params)
    assert r.status_code == 400 and "import directory" in r.json()["issue"][0]["diagnostics"]
