"""Federation: replication throughput (county -> city -> province) and the province's lag under a
steady write load at the county, over each transport (HTTP $replicate; NATS JetStream when a server
answers at 127.0.0.1:4222).

Three `changbai serve` processes on loopback, each with its own SQLite file and security on (as on a real
node: each child authenticates to its parent with SMART Backend Services; the benchmark writes and reads
as a registered backend client). Writes go to the county as transaction bundles of new Patients (names
and birth dates drawn as the synthetic province draws them: every node runs the master index). Lag per
resource is the province's meta.lastUpdated minus the county's (one machine, one clock). Baseline,
measured in the same run: the same writes to a lone node (no federation, same security), i.e. how fast a
node stores what replication has to carry.

    .venv/bin/python -m benchmarks.federation [--n 5000] [--rate 500] [--seconds 20] [--security off]
        [--transports http,jetstream]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import ECKey

from benchmarks.common import server, table
from changbai.exchange.federation.credentials import (
    BackendServicesClient,
    CredentialsUnavailable,
    load_or_create_key,
    public_jwks,
)
from changbai.synth import names

BENCH = "bench"
NATS_URL = "nats://127.0.0.1:4222"
BENCH_KEY = ECKey.generate_key("P-384", private=True, auto_kid=True)


def enrol(database_url: str, data_dir: str, children: dict[str, str], secure: bool) -> None:
    """What a node's operators do: register the benchmark's client and each child node's public key."""
    from changbai.exchange.federation.enrol import register_child
    from changbai.security.accounts import add_account
    from changbai.security.policy import load_policy
    from changbai.store.database import Database

    db = Database(database_url)
    if secure:
        add_account(db, load_policy(), BENCH, "operator", kind="client", jwks=public_jwks(BENCH_KEY))
    for node, child_dir in children.items():
        register_child(db, node, public_jwks(load_or_create_key(Path(child_dir) / "keys" / "node-client.json")))
    db.dispose()


class Auth(httpx.Auth):
    """Bearer tokens of the benchmark's client, one per node (by FHIR base)."""

    def __init__(self, secure: bool) -> None:
        self.secure = secure
        self.clients: dict[str, BackendServicesClient] = {}

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        if self.secure:
            url = str(request.url)
            base = url[: url.index("/fhir") + 5]
            if base not in self.clients:
                self.clients[base] = BackendServicesClient(base, BENCH, BENCH_KEY, "system/*.cruds")
            request.headers.update(self.clients[base].headers())
        yield request


def resident(i: int, tag: str) -> dict[str, object]:
    """New Patient number ``i``: a name and birth date as the synthetic province draws them (seeded by
    ``i``), so the master index every node runs sees the spread of a real county. Same-surname people born
    on fifty New Year's Days made it score hundreds of candidates a write, which measured the master
    index on a degenerate population rather than replication."""
    rng = random.Random(i)
    sex = "female" if i % 2 else "male"
    birth = date(1940, 1, 1) + timedelta(days=rng.randrange(80 * 365))
    name = names.person_name(rng, names.surname(rng, "01"), sex, birth.year, "01")
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:bench", "value": f"{tag}-{i}"}],
        "name": [{"family": name.family, "given": [name.given], "text": name.text}],
        "gender": sex,
        "birthDate": birth.isoformat(),
    }


def bundle(start: int, n: int, tag: str) -> dict[str, object]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": resident(i, tag), "request": {"method": "POST", "url": "Patient"}}
            for i in range(start, start + n)
        ],
    }


def count(client: httpx.Client, base: str) -> int:
    """Patients at a node; a node too busy to answer (a loaded machine) is asked again."""
    for attempt in range(5):
        try:
            return int(client.get(f"{base}/Patient", params={"_summary": "count"}).json()["total"])
        except (httpx.HTTPError, CredentialsUnavailable):
            if attempt == 4:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def write_all(client: httpx.Client, base: str, n: int, tag: str, chunk: int = 100) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        r = client.post(base, json=bundle(start, min(chunk, n - start), tag))
        r.raise_for_status()
    return time.perf_counter() - t0


def steady(client: httpx.Client, base: str, rate: int, seconds: float, tag: str, chunk: int = 50) -> int:
    """Write ``rate`` Patients a second for ``seconds`` (bundles of ``chunk`` on a fixed schedule)."""
    period = chunk / rate
    written = 0
    t0 = time.perf_counter()
    tick = 0
    while time.perf_counter() - t0 < seconds:
        client.post(base, json=bundle(written, chunk, tag)).raise_for_status()
        written += chunk
        tick += 1
        delay = t0 + tick * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return written


def updated(client: httpx.Client, base: str, tag: str) -> dict[str, float]:
    """identifier value -> meta.lastUpdated (epoch seconds) of the bench's Patients at a node."""
    out: dict[str, float] = {}
    url: str | None = f"{base}/Patient?_count=1000&_elements=identifier"
    while url:
        b = client.get(url).json()
        for e in b.get("entry", []):
            r = e["resource"]
            value = r["identifier"][0]["value"]
            if value.startswith(tag):
                out[value] = datetime.fromisoformat(r["meta"]["lastUpdated"].replace("Z", "+00:00")).timestamp()
        url = next((x["url"] for x in b.get("link", []) if x["relation"] == "next"), None)
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def chain(
    client: httpx.Client, node: Any, transport: str, n: int, rate: int, seconds: float, base: float
) -> list[list[object]]:
    """county -> city -> province over ``transport``: throughput, then the province's lag under load."""
    rows: list[list[object]] = []
    env = {"CHANGBAI_FEDERATION_TRANSPORT": transport}
    with ExitStack() as stack:
        if transport == "jetstream":
            env["CHANGBAI_NATS_STREAM"] = stack.enter_context(nats_stream())
        prov = stack.enter_context(
            node(
                f"prov-{transport}",
                {"city": f"city-{transport}"},
                CHANGBAI_NODE_ID="prov",
                CHANGBAI_NODE_TIER="province",
                **env,
            )
        )
        city = stack.enter_context(
            node(
                f"city-{transport}",
                {"county": f"county-{transport}"},
                CHANGBAI_NODE_ID="city",
                CHANGBAI_NODE_TIER="city",
                CHANGBAI_PARENT_URL=prov,
                **env,
            )
        )
        county = stack.enter_context(
            node(
                f"county-{transport}",
                CHANGBAI_NODE_ID="county",
                CHANGBAI_NODE_TIER="county",
                CHANGBAI_PARENT_URL=city,
                **env,
            )
        )
        # Throughput: write n at the county as fast as it takes them; time until the province has all.
        t0 = time.perf_counter()
        write_secs = write_all(client, county, n, "tp")
        while count(client, prov) < n:
            time.sleep(0.05)
        total = time.perf_counter() - t0
        rows.append(
            [
                f"{transport}: county -> city -> province, all at the province",
                n,
                f"{total:.1f}",
                f"{n / total:.0f} ({n / total / base:.2f} x baseline)",
                f"county writes took {write_secs:.1f} s",
            ]
        )
        # Lag under a steady load.
        t0 = time.perf_counter()
        written = steady(client, county, rate, seconds, "lag")
        achieved = written / (time.perf_counter() - t0)
        deadline = time.monotonic() + 120
        while count(client, prov) < n + written and time.monotonic() < deadline:
            time.sleep(0.1)
        at_county = updated(client, county, "lag")
        at_prov = updated(client, prov, "lag")
        lags = [at_prov[k] - at_county[k] for k in at_county if k in at_prov]
        missing = len(at_county) - len(lags)
        rows.append(
            [
                f"{transport}: lag at {rate} writes/s offered for {seconds:.0f} s",
                written,
                f"{seconds:.0f}",
                f"{achieved:.0f} achieved ({achieved / base:.2f} x baseline)",
                f"p50 {statistics.median(lags):.2f} s, p99 {pct(lags, 99):.2f} s, max {max(lags):.2f} s"
                + (f", {missing} missing" if missing else ""),
            ]
        )
    return rows


@contextmanager
def nats_stream() -> Iterator[str]:
    """A stream of the benchmark's own on the NATS server (deleted afterwards)."""
    import asyncio
    import uuid

    import nats

    name = f"CHANGBAI_BENCH_{uuid.uuid4().hex[:8]}"
    yield name

    async def delete() -> None:
        nc = await nats.connect(NATS_URL, allow_reconnect=False, max_reconnect_attempts=1)
        with suppress(Exception):  # never made (the run failed before): nothing to clean
            await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(delete())


def nats_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.federation")
    ap.add_argument("--n", type=int, default=5000, help="resources for the throughput run")
    ap.add_argument("--rate", type=int, default=500, help="writes per second for the lag run")
    ap.add_argument("--seconds", type=float, default=20, help="length of the lag run")
    ap.add_argument("--security", choices=["on", "off"], default="on", help="security on every node")
    ap.add_argument("--transports", default="http,jetstream", help="http, jetstream or both (comma-separated)")
    args = ap.parse_args(argv)
    secure = args.security == "on"
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    notes = []
    if "jetstream" in transports and not nats_reachable():
        transports.remove("jetstream")
        notes.append("jetstream rows skipped: no NATS server at 127.0.0.1:4222")

    rows: list[list[object]] = []
    with (
        tempfile.TemporaryDirectory(prefix="changbai-fed-") as d,
        httpx.Client(timeout=120, auth=Auth(secure)) as client,
    ):

        def node(name: str, children: dict[str, str] | None = None, **env: str):  # type: ignore[no-untyped-def]
            url, data = f"sqlite:///{d}/{name}.db", f"{d}/{name}"
            # Children are registered at their parent with security off too: it is how a JetStream
            # parent knows whose batches to take.
            enrol(url, data, {k: f"{d}/{v}" for k, v in (children or {}).items()}, secure)
            env = {
                "CHANGBAI_SECURITY": args.security,
                "CHANGBAI_DATA_DIR": data,
                "CHANGBAI_NODE_AUTH": "smart" if secure else "none",
                "CHANGBAI_FEDERATION_POLICY": "whole-record",
                **env,
            }
            return server(url, **env)

        # Baseline: a lone node storing the same writes.
        with node("alone") as alone:
            secs = write_all(client, alone, args.n, "base")
            base = args.n / secs
            rows.append(["baseline: lone node stores (no federation)", args.n, f"{secs:.1f}", f"{base:.0f}", ""])
        for transport in transports:
            rows += chain(client, node, transport, args.n, args.rate, args.seconds, base)
    print(table(["run", "resources", "seconds", "resources/s", "notes"], rows))
    print(
        f"\nSecurity {args.security} on every node. "
        f"Target: the province lags the county by under 5 s (p99) at {args.rate} writes/s."
        + "".join(f"\n{n}." for n in notes)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
