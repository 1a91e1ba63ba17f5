"""Sustained HL7 v2 over MLLP: messages per second and ACK latency, one and four connections.

Run: .venv/bin/python -m benchmarks.mllp [--messages N] [--backends sqlite,postgresql] [--database URL]

Each scenario runs the listener in its own process (so client and server do not share one GIL) on a
loopback port, and clients send a mix of ADT^A01/A08 and ORU^R01 messages (distinct control ids, 200
patients), each waiting for its ACK before sending the next (as MLLP senders do), after 50 warm-up
messages that are not counted:

- baseline ``echo``: the same sockets and framing, answered with a fixed ACK (no parsing, no store);
- ``parse+map``: parsed, mapped to FHIR and acknowledged, nothing stored (in-memory inbox);
- ``store``: end to end: inbox row + FHIR resources committed in one transaction before the ACK
  (a fresh SQLite file and/or PostgreSQL database per row, or --database).

Like the other core benchmarks it runs with security off (``CHANGBAI_SECURITY=on`` to include sign-in
policies' labels and the audit trail in the write path); the header says which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import database as fresh_database

ECHO_ACK = b"MSH|^~\\&|CHANGBAI||||20260101||ACK|1|P|2.5\rMSA|AA|1\r"


SURNAMES = [
    "WANG",
    "LI",
    "ZHANG",
    "LIU",
    "CHEN",
    "YANG",
    "HUANG",
    "ZHAO",
    "WU",
    "ZHOU",
    "XU",
    "SUN",
    "MA",
    "ZHU",
    "HU",
    "GUO",
    "HE",
    "LIN",
    "LUO",
    "GAO",
]
SYLLABLES = ["MING", "HUA", "JIAN", "GUO", "LI", "NA", "WEI", "FANG", "XIU", "YING", "JUN", "HONG"]


def person(k: int) -> tuple[str, str, str, str]:
    """Patient k's name, birth date, sex and street: as varied as a county's residents (200 look-alikes
    sharing surname, birth date and address would put every one in every master-index block)."""
    name = f"{SURNAMES[k % 20]}^{SYLLABLES[k % 12]}{SYLLABLES[(k * 7 + 3) % 12]}"
    born = f"{1940 + (k * 7) % 70}{1 + (k * 5) % 12:02d}{1 + (k * 11) % 28:02d}"
    return name, born, "MF"[k % 2], f"{k + 1} RENMIN RD"


def messages(n: int, prefix: str) -> list[bytes]:
    out = []
    for i in range(n):
        mrn = f"B{i % 200:05d}"
        name, born, sex, street = person(i % 200)
        when = f"202601{1 + i % 28:02d}{8 + i % 10:02d}{i % 60:02d}00+0800"
        if i % 2 == 0:
            event = "A01" if i % 4 == 0 else "A08"
            text = "\r".join(
                [
                    f"MSH|^~\\&|HIS|BENCH|CHANGBAI|PROV|{when}||ADT^{event}^ADT_A01|{prefix}{i}|P|2.5.1",
                    f"EVN|{event}|{when}",
                    f"PID|1||{mrn}^^^BENCH^MR||{name}||{born}|{sex}|||{street}^^CHANGCHUN^JL^130000",
                    f"PV1|1|I|W1^101^2^BENCH||||D01^LI^SI|||MED|||||||||V{i % 400}^^^BENCH^VN"
                    f"|||||||||||||||||||||||||{when}",
                ]
            )
        else:
            text = "\r".join(
                [
                    f"MSH|^~\\&|LIS|BENCH|CHANGBAI|PROV|{when}||ORU^R01^ORU_R01|{prefix}{i}|P|2.5.1",
                    f"PID|1||{mrn}^^^BENCH^MR||{name}||{born}|{sex}",
                    f"OBR|1|P{i}|F{i}^BENCH|24323-8^Metabolic panel^LN|||{when}||||||||||||||{when}||CH|F",
                    f"OBX|1|NM|2345-7^Glucose^LN||{4 + i % 5}.{i % 10}|mmol/L^^UCUM|3.9-6.1|N|||F|||{when}",
                    f"OBX|2|NM|2160-0^Creatinine^LN||{60 + i % 40}|umol/L^^UCUM|44-133|N|||F|||{when}",
                ]
            )
        out.append((text + "\r").encode())
    return out


WARM_UP = messages(50, "warm-")


# ------------------------------------------------------------------------------------------ server side
def serve(mode: str, port: int, database: str) -> None:
    from changbai.exchange.intake import Intake, MemoryStore
    from changbai.exchange.service import listen

    if mode == "echo":

        def handler(raw: bytes, peer: str) -> bytes:
            return ECHO_ACK
    elif mode == "memory":
        handler = Intake(MemoryStore()).handle
    else:
        from changbai.api.app import create_platform
        from changbai.exchange.service import build_intake
        from changbai.settings import Settings

        platform = create_platform(Settings(database_url=database, log_level="WARNING"))
        handler = build_intake(platform).handle

    async def run() -> None:
        server = await listen(handler, "127.0.0.1", port)  # as `changbai serve` and `changbai mllp` listen
        print("READY", flush=True)
        assert server.server is not None
        await server.server.serve_forever()

    asyncio.run(run())


# ------------------------------------------------------------------------------------------ client side
async def client(port: int, batch: list[bytes]) -> list[float]:
    from changbai.exchange.mllp import MllpClient

    c = await MllpClient("127.0.0.1", port).connect()
    latencies = []
    for raw in batch:
        t = time.perf_counter()
        ack = await c.send(raw)
        latencies.append(time.perf_counter() - t)
        if b"|AA|" not in ack and ack != ECHO_ACK:
            raise RuntimeError(f"not accepted: {ack[:200]!r}")
    await c.close()
    return latencies


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None where /proc is not there. The listener's
    CPU per message is what its own code costs, whatever else the machine is running."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scenario(mode: str, connections: int, msgs: list[bytes], database: str) -> dict:
    port = free_port()
    env = {**os.environ, "CHANGBAI_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mllp", "--serve", mode, "--port", str(port), "--database", database],
        stdout=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"READY" not in line:
            raise RuntimeError(f"{mode} server did not start")
        # warm-up (first imports, caches, the first pages of a new database), not counted: the figure is
        # the sustained rate
        asyncio.run(client(port, WARM_UP))
        batches = [msgs[i::connections] for i in range(connections)]

        async def run() -> list[list[float]]:
            return await asyncio.gather(*(client(port, b) for b in batches))

        cpu_before = cpu_seconds(proc.pid)
        started = time.perf_counter()
        lat = [x for part in asyncio.run(run()) for x in part]
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lat.sort()
    return {
        "mode": mode,
        "connections": connections,
        "messages": len(lat),
        "rate": len(lat) / elapsed,
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "cpu": None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) * 1000 / len(lat),
    }


LABELS = {
    "echo": "baseline: echo ACK (sockets + framing only)",
    "memory": "parse + map, no store",
    "store": "end to end: committed to the store",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.mllp", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per scenario (default 1000)")
    parser.add_argument("--backends", default="sqlite", help="stores for the end-to-end rows: sqlite,postgresql")
    parser.add_argument("--database", help="database URL for the end-to-end rows (instead of fresh databases)")
    parser.add_argument("--serve", choices=["echo", "memory", "store"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.database or "")
        return 0
    rows = []
    load_before = os.getloadavg()[0]
    for mode in ("echo", "memory"):
        for connections in (1, 4):
            rows.append(scenario(mode, connections, messages(args.messages, f"{mode[0]}{connections}-"), ""))
    backends = ["given"] if args.database else [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        for connections in (1, 4):
            msgs = messages(args.messages, f"s{connections}-")
            if args.database:
                rows.append({**scenario("store", connections, msgs, args.database), "store": "given database"})
                continue
            with fresh_database(backend) as url:
                if url is None:
                    print(f"({backend} not reachable: skipped)")
                    break
                rows.append({**scenario("store", connections, msgs, url), "store": backend})
    print(
        f"HL7 v2 over MLLP, ADT^A01/A08 + ORU^R01 mix, {args.messages} messages per row, "
        f"{os.cpu_count()} CPUs (1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after), "
        f"security {os.environ.get('CHANGBAI_SECURITY', 'on')}\n"
    )
    print(
        "| scenario | store | connections | messages | messages/s | x echo | ACK p50 ms | ACK p99 ms "
        "| listener CPU ms/message |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    echo = {r["connections"]: r["rate"] for r in rows if r["mode"] == "echo"}
    for r in rows:
        print(
            f"| {LABELS[r['mode']]} | {r.get('store', '-')} | {r['connections']} | {r['messages']} | {r['rate']:.0f} | "
            f"{r['rate'] / echo[r['connections']]:.3f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{'-' if r['cpu'] is None else format(r['cpu'], '.2f')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
