"""The cost of security: ingest (transaction bundles) and searches through `changbai serve`, with
CHANGBAI_SECURITY=off (the baseline) and on (token check, scopes, access labels, field encryption, SQL
restrictions, audit rows), in the same run, as a ratio. Target: at most 1.15 (15% slower).

Each workload is measured twice: wall time as the client sees it, and the CPU time the server process
spent (from /proc). On a machine that other work shares, the wall time moves with their load; the
server's CPU time per operation moves much less, so its ratio is the steadier figure. Several
alternations (``--rounds``) keep the best of each.

    .venv/bin/python -m benchmarks.security --resources 2000 --searches 300 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from benchmarks.common import database, served, table
from benchmarks.ingest import synthea_resources, transaction_chunks

ORG = "bench-hospital"


def cli(data_dir: str, database_url: str, *args: str) -> str:
    env = {
        **os.environ,
        "CHANGBAI_DATA_DIR": data_dir,
        "CHANGBAI_DATABASE_URL": database_url,
        "CHANGBAI_LOG_LEVEL": "WARNING",
    }
    out = subprocess.run(
        [sys.executable, "-m", "changbai.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"changbai {' '.join(args[:2])} failed: {out.stderr.strip()[-2000:]}")
    return out.stdout.strip()


def ingest(base: str, chunks: list[bytes], headers: dict[str, str]) -> float:
    h = {"content-type": "application/fhir+json", "prefer": "return=minimal", **headers}
    with httpx.Client(timeout=300) as client:
        start = time.perf_counter()
        for body in chunks:
            r = client.post(base, content=body, headers=h)
            if r.status_code != 200:
                raise RuntimeError(r.text[:300])
        return time.perf_counter() - start


def searches(base: str, queries: list[tuple[str, dict[str, str]]], headers: dict[str, str]) -> tuple[float, int]:
    found = 0
    with httpx.Client(timeout=60, headers=headers) as client:
        start = time.perf_counter()
        for path, params in queries:
            r = client.get(f"{base}/{path}", params=params)
            if r.status_code != 200:
                raise RuntimeError(f"{path} {params}: {r.text[:300]}")
            found += len(r.json().get("entry", []))
        return time.perf_counter() - start, found


def queries_for(resources: list[dict[str, Any]], n: int) -> list[tuple[str, dict[str, str]]]:
    patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    codes = sorted(
        {
            c["code"]
            for r in resources
            if r["resourceType"] == "Observation"
            for c in r.get("code", {}).get("coding", [])
        }
    )
    out: list[tuple[str, dict[str, str]]] = []
    i = 0
    while len(out) < n:
        pid = patients[i % len(patients)]
        code = codes[i % len(codes)]
        out.append(("Observation", {"subject": f"Patient/{pid}", "_count": "20"}))
        out.append(("Observation", {"code": code, "_count": "20"}))
        out.append(("Encounter", {"patient": pid}))
        out.append(("Patient", {"_id": pid, "_revinclude": "Condition:subject"}))
        i += 1
    return out[:n]


def run(backend: str, mode: str, chunks: list[bytes], count: int, queries: list[Any]) -> dict[str, Any] | None:
    with database(backend) as url, tempfile.TemporaryDirectory(prefix="changbai-sec-") as data_dir:
        if url is None:
            return None
        env = {"CHANGBAI_SECURITY": mode, "CHANGBAI_DATA_DIR": data_dir, "CHANGBAI_TOKEN_RATE_PER_MINUTE": "100000"}
        with served(url, **env) as running:
            base = running.base
            writer: dict[str, str] = {}
            reader: dict[str, str] = {}
            if mode == "on":
                cli(data_dir, url, "users", "add", "bench-his", "--role", "integration", "--organization", ORG)
                cli(
                    data_dir,
                    url,
                    "users",
                    "add",
                    "bench-doctor",
                    "--role",
                    "clinician",
                    "--organization",
                    ORG,
                    "--practitioner",
                    "bench-dr",
                )
                writer = {
                    "authorization": "Bearer "
                    + cli(data_dir, url, "token", "bench-his", "--audience", base, "--minutes", "60")
                }
                reader = {
                    "authorization": "Bearer "
                    + cli(data_dir, url, "token", "bench-doctor", "--audience", base, "--minutes", "60")
                }
            cpu = running.cpu_seconds()
            ingest_s = ingest(base, chunks, writer)
            ingest_cpu = running.cpu_seconds() - cpu
            searches(base, queries[:20], reader)  # warm caches alike in both modes
            cpu = running.cpu_seconds()
            search_s, found = searches(base, queries, reader)
            search_cpu = running.cpu_seconds() - cpu
        return {
            "ingest": count / ingest_s,
            "search": len(queries) / search_s,
            "ingest_cpu": ingest_cpu * 1e6 / count,  # server CPU µs per resource
            "search_cpu": search_cpu * 1e3 / len(queries),  # server CPU ms per query
            "found": found,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.security")
    parser.add_argument("--resources", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--rounds", type=int, default=1, help="alternate off/on this many times, keep the best")
    args = parser.parse_args(argv)
    resources = synthea_resources(args.resources)
    chunks = transaction_chunks(resources)
    queries = queries_for(resources, args.searches)
    rows = []
    for backend in args.backends.split(","):
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                got = run(backend, mode, chunks, len(resources), queries)
                if got is None:
                    break
                prev = best.get(mode)
                best[mode] = got if prev is None else {k: _best(k, prev[k], got[k]) for k in got}
        if len(best) < 2:
            print(f"{backend}: skipped (not reachable)")
            continue
        off, on = best["off"], best["on"]
        rows.append(
            [
                backend,
                "ingest, bundles of 100: resources/s (wall)",
                f"{off['ingest']:.0f}",
                f"{on['ingest']:.0f}",
                f"{off['ingest'] / on['ingest']:.2f}",
            ]
        )
        rows.append(
            [
                backend,
                "ingest: server CPU µs per resource",
                f"{off['ingest_cpu']:.0f}",
                f"{on['ingest_cpu']:.0f}",
                f"{on['ingest_cpu'] / off['ingest_cpu']:.2f}",
            ]
        )
        rows.append(
            [
                backend,
                f"search: queries/s (wall; {off['found']} vs {on['found']} entries)",
                f"{off['search']:.1f}",
                f"{on['search']:.1f}",
                f"{off['search'] / on['search']:.2f}",
            ]
        )
        rows.append(
            [
                backend,
                "search: server CPU ms per query",
                f"{off['search_cpu']:.2f}",
                f"{on['search_cpu']:.2f}",
                f"{on['search_cpu'] / off['search_cpu']:.2f}",
            ]
        )
    print(
        f"Security cost: {len(resources)} Synthea resources, {len(queries)} searches, best of {args.rounds} "
        "alternations; ratio = time with security / time without (target <= 1.15)\n"
    )
    print(table(["backend", "workload", "security off (baseline)", "security on", "ratio"], rows))
    return 0


def _best(key: str, a: float, b: float) -> Any:
    """Throughputs: the higher; CPU per operation: the lower (other work on the machine only adds)."""
    if key.endswith("_cpu"):
        return min(a, b)
    return max(a, b) if key != "found" else b


if __name__ == "__main__":
    sys.exit(main())
