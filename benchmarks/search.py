"""Search latency: p50 and p99 of twelve typical searches over the synthetic province, at 100k and 1M
resources, on SQLite and PostgreSQL, with one client and with 8 concurrent clients, over HTTP to a
`changbai serve` process. The baseline is `GET /fhir/Patient/{id}` (a read by primary key) in the same run.

    python -m benchmarks.search [--sizes 100000,1000000] [--backends sqlite,postgresql] [--repeat 100]
                                [--clients 1,8] [--keep DIR]

Generating and loading 1M resources takes a quarter of an hour. With ``--keep DIR`` the generated files
and the SQLite file stay in DIR and the PostgreSQL database ``changbai_search_<size>`` stays on the
server; a later run with the same DIR measures them again without loading (delete DIR and drop the
database to start over).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.common import PG_ADMIN, database, server, table

RESOURCES_PER_RESIDENT = 34  # what changbai.synth writes on average (measured: 832,402 for 24,390)
ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"

Search = tuple[str, Callable[[random.Random], str]]


def _sample(directory: Path) -> dict[str, list[Any]]:
    """Values to search for, read from the generated files (not from the server)."""
    out: dict[str, list[Any]] = {"patients": [], "orgs": [], "months": []}
    with (directory / "Patient.ndjson").open("rb") as f:
        for line in f:
            p = orjson.loads(line)
            ident = next((i["value"] for i in p.get("identifier", []) if i.get("system") == ID_SYSTEM), None)
            if ident and p.get("name"):
                out["patients"].append((p["id"], ident, p["name"][0].get("family", ""), p.get("birthDate", "")))
    with (directory / "Encounter.ndjson").open("rb") as f:
        for i, line in enumerate(f):
            if i % 50:
                continue
            e = orjson.loads(line)
            org = (e.get("serviceProvider") or {}).get("reference")
            start = (e.get("period") or {}).get("start", "")
            if org and start:
                out["orgs"].append(org)
                out["months"].append(start[:7])
    return out


def searches(sample: dict[str, list[Any]]) -> list[Search]:
    pats, orgs, months = sample["patients"], sample["orgs"], sample["months"]

    def pat(rng: random.Random) -> tuple[str, str, str, str]:
        return rng.choice(pats)

    return [
        ("patient by ID number", lambda r: f"Patient?identifier={ID_SYSTEM}|{pat(r)[1]}"),
        ("patient by name + birth date", lambda r: "Patient?family={2}&birthdate={3}".format(*pat(r))),
        (
            "observations of a patient by code + dates, sorted",
            lambda r: (
                f"Observation?subject=Patient/{pat(r)[0]}&code=http://loinc.org|85354-9"
                "&date=ge2020-01-01&date=le2026-12-31&_sort=-date"
            ),
        ),
        (
            "encounters of a facility in a month",
            lambda r: f"Encounter?service-provider={r.choice(orgs)}&date={r.choice(months)}",
        ),
        (
            "conditions by ICD-10 :below a block",
            lambda r: "Condition?code:below=http://hl7.org/fhir/sid/icd-10|I10-I15&_count=20",
        ),
        (
            "chained: observations by patient ID number",
            lambda r: f"Observation?subject:Patient.identifier={ID_SYSTEM}|{pat(r)[1]}&code=http://loinc.org|4548-4",
        ),
        ("_revinclude encounters of a patient", lambda r: f"Patient?_id={pat(r)[0]}&_revinclude=Encounter:subject"),
        (
            "_has: patients with hypertension, by family name",
            lambda r: f"Patient?_has:Condition:subject:code=http://hl7.org/fhir/sid/icd-10|I10&family={pat(r)[2]}",
        ),
        ("compartment: a patient's conditions", lambda r: f"Patient/{pat(r)[0]}/Condition"),
        ("count of HbA1c results", lambda r: "Observation?code=http://loinc.org|4548-4&_summary=count"),
        (
            "quantity: glucose above 7 mmol/L of a patient",
            lambda r: f"Observation?subject=Patient/{pat(r)[0]}&value-quantity=gt7|http://unitsofmeasure.org|mmol/L",
        ),
        ("immunizations of a patient since 2020", lambda r: f"Immunization?patient=Patient/{pat(r)[0]}&date=ge2020"),
    ]


def _measure(base: str, make: Callable[[random.Random], str], repeat: int, clients: int) -> tuple[float, float, str]:
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=60) as client:
            for _ in range(repeat // clients):
                url = f"{base}/{make(rng)}"
                start = time.perf_counter()
                r = client.get(url)
                elapsed = time.perf_counter() - start
                with lock:
                    (times.append(elapsed) if r.status_code == 200 else errors.append(f"{r.status_code}"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if not times:
        return float("nan"), float("nan"), f"failed ({errors[0] if errors else '?'})"
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    note = f"{len(errors)} errors" if errors else ""
    return statistics.median(times) * 1000, p99 * 1000, note


@contextlib.contextmanager
def _province(keep: Path | None, size: int) -> Iterator[tuple[Path, bool]]:
    """The directory of the generated province for ``size``, and whether it is generated already."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="changbai-search-") as tmp:
            yield Path(tmp) / "province", False
        return
    data = keep / f"province-{size}"
    yield data, (keep / f"generated-{size}").exists()


@contextlib.contextmanager
def _database(keep: Path | None, backend: str, size: int) -> Iterator[tuple[str | None, str | None]]:
    """A database URL for ``backend`` and, when kept from an earlier run, its load marker ("count seconds")."""
    if keep is None:
        with database(backend) as url:
            yield url, None
        return
    marker = keep / f"loaded-{backend}-{size}"
    if backend == "sqlite":
        yield f"sqlite:///{keep}/search-{size}.db", marker.read_text() if marker.exists() else None
        return
    import psycopg

    name = f"changbai_search_{size}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
                marker.unlink(missing_ok=True)
    except psycopg.OperationalError:
        yield None, None
        return
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", marker.read_text() if marker.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.search")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) generated data and databases here")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    from changbai.api.app import create_platform
    from changbai.settings import Settings
    from changbai.store.bulk import load_directory
    from changbai.synth import generate
    from changbai.terminology.content import load as load_terminology

    headers = ["backend", "resources", "clients", "search", "p50 ms", "p99 ms", "p50 / baseline", "note"]
    rows: list[list[Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        with _province(args.keep, size) as (data, generated):
            if not generated:
                generate(data, residents=max(1, size // RESOURCES_PER_RESIDENT), seed=7)
                if args.keep:
                    (args.keep / f"generated-{size}").touch()
            sample = _sample(data)
            for backend in args.backends.split(","):
                with _database(args.keep, backend, size) as (url, marker):
                    if url is None:
                        rows.append([backend, size, "", "PostgreSQL unreachable", "", "", "", ""])
                        continue
                    platform = create_platform(Settings(database_url=url))
                    if marker:
                        count, load_s = int(marker.split()[0]), float(marker.split()[1])
                    else:
                        t0 = time.perf_counter()
                        count = load_directory(platform.repo, data).read
                        load_s = time.perf_counter() - t0
                        load_terminology(platform.repo)  # ICD-10 hierarchy for :below
                        if args.keep:
                            (args.keep / f"loaded-{backend}-{size}").write_text(f"{count} {load_s:.0f}")
                    platform.db.dispose()
                    with server(url) as base:
                        for clients in (int(c) for c in args.clients.split(",")):
                            base_p50, p99, _ = _measure(
                                base, lambda r, s=sample: f"Patient/{r.choice(s['patients'])[0]}", args.repeat, clients
                            )
                            rows.append(
                                [
                                    backend,
                                    count,
                                    clients,
                                    "baseline: read Patient by id",
                                    f"{base_p50:.1f}",
                                    f"{p99:.1f}",
                                    "1.0",
                                    f"loaded in {load_s:.0f} s",
                                ]
                            )
                            for name, make in searches(sample):
                                p50, p99, note = _measure(base, make, args.repeat, clients)
                                ratio = f"{p50 / base_p50:.1f}"
                                rows.append([backend, count, clients, name, f"{p50:.1f}", f"{p99:.1f}", ratio, note])
                            print(table(headers, rows[-13:]), flush=True)
    print()
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
