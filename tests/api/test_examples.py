"""Every valid example of the R4 specification is accepted and reads back equal (apart from meta),
through PUT with its own id (every example on SQLite) and through transaction bundles (every second one on
SQLite); on PostgreSQL, whose paths are the same code, every fourth (PUT) and every eighth (bundles), to keep
the suite short."""

from __future__ import annotations

import json

import pytest

from changbai.settings import Settings
from tests.api.examples import KNOWN_INVALID, load_examples, without_meta_versioning


@pytest.fixture
def settings(tmp_path, database_url):  # larger body limit: the specification's own bundles reach 35 MB
    return Settings(data_dir=tmp_path / "var", database_url=database_url, max_body_bytes=64 * 1024 * 1024, mllp_port=0)


def test_put_every_example_and_read_it_back(client, database_url):
    examples = load_examples()
    if not database_url.startswith("sqlite"):
        examples = examples[::4]  # the same code as on SQLite; a quarter keeps the suite short
    rejected = {}
    for name, resource in examples:
        r = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        if r.status_code >= 400:
            rejected[name] = r.json()["issue"][0]["diagnostics"]
            continue
        assert r.status_code in (200, 201), (name, r.text)
        back = client.get(f"/{resource['resourceType']}/{resource['id']}")
        assert back.status_code == 200
        if name != "ig-r4.json":  # ImplementationGuide/fhir is also in ImplementationGuide-fhir.json
            assert without_meta_versioning(back.json()) == without_meta_versioning(resource), name
    expected = {name for name, _ in examples} & set(KNOWN_INVALID)
    assert set(rejected) == expected, {k: v for k, v in rejected.items() if k not in KNOWN_INVALID}
    assert len(examples) - len(rejected) >= (5290 if database_url.startswith("sqlite") else 1320)


def test_transaction_bundles_of_examples(client, database_url):
    examples = [(n, r) for n, r in load_examples() if n not in KNOWN_INVALID and n != "ig-r4.json"]
    examples = examples[::2] if database_url.startswith("sqlite") else examples[::8]
    for chunk in _chunks(examples, entries=100, max_bytes=16_000_000):
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for _, r in chunk
            ],
        }
        resp = client.post("", json=bundle)
        assert resp.status_code == 200, resp.text[:500]
        statuses = [e["response"]["status"] for e in resp.json()["entry"]]
        assert all(s.startswith("201") for s in statuses), statuses
    for name, resource in examples:
        back = client.get(f"/{resource['resourceType']}/{resource['id']}")
        assert without_meta_versioning(back.json()) == without_meta_versioning(resource), name


def _chunks(examples, entries, max_bytes):
    """Bundles of up to ``entries`` entries and about ``max_bytes`` of JSON (the server's body limit)."""
    chunk, size = [], 0
    for name, resource in examples:
        n = len(json.dumps(resource))
        if chunk and (len(chunk) == entries or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((name, resource))
        size += n
    if chunk:
        yield chunk
