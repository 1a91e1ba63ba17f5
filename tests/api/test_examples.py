"""Every valid example of the R4 specification is accepted, on SQLite: every second one through PUT with
its own id and read back equal (apart from meta), the others through transaction bundles. On PostgreSQL,
whose paths are the same code, every eighth through each, to keep the suite short."""

from __future__ import annotations

import json

import pytest

from changbai.settings import Settings
from tests.api.examples import KNOWN_INVALID, load_examples, without_meta_versioning


@pytest.fixture
def settings(tmp_path, database_url):  # larger body limit: the specification's own bundles reach 35 MB
    return Settings(data_dir=tmp_path / "var", database_url=database_url, max_body_bytes=64 * 1024 * 1024, mllp_port=0)


def _share(database_url: str, start: int) -> list[tuple[str, dict]]:
    """This test's share of the examples: every second (SQLite) or eighth (PostgreSQL) from ``start``."""
    return load_examples()[start :: 2 if database_url.startswith("sqlite") else 8]


def test_put_every_example_and_read_it_back(client, database_url):
    examples = _share(database_url, 0)
    # the known invalid ones are all tried here: they must be refused
    examples += [(n, r) for n, r in load_examples() if n in KNOWN_INVALID and (n, r) not in examples]
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
    assert len(examples) - len(rejected) >= (2640 if database_url.startswith("sqlite") else 660)


def test_transaction_bundles_of_examples(client, database_url):
    examples = [(n, r) for n, r in _share(database_url, 1) if n not in KNOWN_INVALID and n != "ig-r4.json"]
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
