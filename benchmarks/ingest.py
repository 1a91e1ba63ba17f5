"""Ingest throughput: transaction bundles of 100 entries and single POSTs, over HTTP to a `changbai serve`
process, at 10k and 100k resources of realistic data (the Synthea bundles of shared/testdata, copied
with fresh ids), on SQLite and PostgreSQL, beside a raw baseline measured in the same run: the same JSON
inserted into the same kind of database with no validation and no index.

    python -m benchmarks.ingest [--sizes 10000,100000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import httpx
import orjson

from benchmarks.common import TESTDATA, database, server, table


def synthea_resources(n: int) -> list[dict[str, Any]]:
    """``n`` resources: the Synthea bundles copied with fresh ids, references rewritten to Type/id."""
    bundles = [json.loads(p.read_text()) for p in sorted((TESTDATA / "synthea").glob("*.json"))]
    out: list[dict[str, Any]] = []
    copy = 0
    while len(out) < n:
        for bundle in bundles:
            mapping: dict[str, str] = {}
            for e in bundle["entry"]:
                new_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{copy}:{e['fullUrl']}")
                mapping[e["fullUrl"]] = f"{e['resource']['resourceType']}/{new_id}"
            text = orjson.dumps([e["resource"] for e in bundle["entry"]]).decode()
            for old, new in mapping.items():
                text = text.replace(f'"{old}"', f'"{new}"')
            for e, resource in zip(bundle["entry"], json.loads(text), strict=True):
                resource["id"] = mapping[e["fullUrl"]].split("/", 1)[1]
                out.append(resource)
            copy += 1
            if len(out) >= n:
                break
    return out[:n]


def transaction_chunks(resources: list[dict[str, Any]], size: int = 100) -> list[bytes]:
    chunks = []
    for i in range(0, len(resources), size):
        entries = [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources[i : i + size]
        ]
        chunks.append(orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return chunks


def bench_bundles(base: str, chunks: list[bytes], count: int) -> float:
    headers = {"content-type": "application/fhir+json", "prefer": "return=minimal"}
    with httpx.Client(timeout=300) as client:
        start = time.perf_counter()
        for body in chunks:
            r = client.post(base, content=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(r.text[:300])
        return count / (time.perf_counter() - start)


def bench_posts(base: str, resources: list[dict[str, Any]]) -> float:
    headers = {"content-type": "application/fhir+json", "prefer": "return=minimal"}
    bodies = [(r["resourceType"], orjson.dumps({k: v for k, v in r.items() if k != "id"})) for r in resources]
    with httpx.Client(timeout=60) as client:
        start = time.perf_counter()
        for rtype, body in bodies:
            r = client.post(f"{base}/{rtype}", content=body, headers=headers)
            if r.status_code != 201:
                raise RuntimeError(r.text[:300])
        return len(bodies) / (time.perf_counter() - start)


def bench_raw(url: str, resources: list[dict[str, Any]]) -> float:
    """The limit: the JSON inserted in transactions of 100 rows, no validation, no index."""
    rows = [(r["id"], r["resourceType"], orjson.dumps(r).decode()) for r in resources]
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE raw (id TEXT, rtype TEXT, content TEXT)")
        start = time.perf_counter()
        for i in range(0, len(rows), 100):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO raw VALUES (?, ?, ?)", rows[i : i + 100])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        return len(rows) / elapsed
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE raw (id TEXT, rtype TEXT, content TEXT)")
        conn.commit()
        start = time.perf_counter()
        for i in range(0, len(rows), 100):
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO raw VALUES (%s, %s, %s)", rows[i : i + 100])
            conn.commit()
        return len(rows) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.ingest")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--posts-max", type=int, default=100000, help="cap on resources sent as single POSTs")
    args = parser.parse_args(argv)
    rows = []
    for backend in args.backends.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            resources = synthea_resources(n)
            chunks = transaction_chunks(resources)
            with database(backend) as raw_url:
                if raw_url is None:
                    rows.append([backend, n, "PostgreSQL unreachable", "", "", ""])
                    continue
                raw = bench_raw(raw_url, resources)
            with database(backend) as url, server(url or "") as base:
                bundles = bench_bundles(base, chunks, n)
            with database(backend) as url, server(url or "") as base:
                posts = bench_posts(base, resources[: args.posts_max])
            rows.append(
                [
                    backend,
                    n,
                    f"{raw:,.0f}",
                    f"{bundles:,.0f} ({bundles / raw:.1%})",
                    f"{posts:,.0f} ({posts / raw:.1%})",
                    "Synthea R4",
                ]
            )
            print(
                table(
                    [
                        "backend",
                        "resources",
                        "raw baseline /s",
                        "transaction bundles of 100 /s (of raw)",
                        "single POSTs /s (of raw)",
                        "data",
                    ],
                    rows[-1:],
                ),
                flush=True,
            )
    print()
    print(
        table(
            [
                "backend",
                "resources",
                "raw baseline /s",
                "transaction bundles of 100 /s (of raw)",
                "single POSTs /s (of raw)",
                "data",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
