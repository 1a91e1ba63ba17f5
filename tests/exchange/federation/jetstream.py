"""The real NATS JetStream server for federation tests: reachable or a clear skip, one stream per test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

NATS_URL = "nats://127.0.0.1:4222"


def nats_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return True
    except OSError:
        return False


def skip_without_nats() -> None:
    if not nats_reachable():
        pytest.skip("JetStream tests skipped: no NATS server at 127.0.0.1:4222 (run nats-server with -js)")


async def _js_call(fn: Any) -> Any:
    import nats

    nc = await nats.connect(NATS_URL, allow_reconnect=False, max_reconnect_attempts=1)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def js_call(fn: Any) -> Any:
    """Run ``fn(jetstream context)`` on a connection of its own (the test's view of the server)."""
    return asyncio.run(_js_call(fn))


def new_stream() -> str:
    skip_without_nats()
    return f"CHANGBAI_TEST_{uuid.uuid4().hex[:12]}"


def delete_stream(name: str) -> None:
    async def delete(js: Any) -> None:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)

    js_call(delete)


def messages_on(stream: str, subject: str) -> int:
    """How many messages the stream holds on ``subject`` (work queue: those not yet acknowledged)."""

    async def count(js: Any) -> int:
        info = await js.stream_info(stream, subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))

    return int(js_call(count))


def histories(platform: Any) -> dict[str, list[tuple[int, bool, Any]]]:
    """Every version at a node, per resource, in version order: (version, deleted, content without the
    version's own meta) — what must be the same, in the same order, at a parent."""
    from changbai.api.router import FhirRequest
    from changbai.store.pipeline import Context

    out: dict[str, list[tuple[int, bool, Any]]] = defaultdict(list)
    query = [("_count", "1000")]
    while True:
        resp = platform.router.handle(FhirRequest("GET", "_history", query=query), Context(source="cli"))
        assert resp.status == 200, resp.body
        for e in resp.body.get("entry", []):
            version = int(e["response"]["etag"][3:-1])
            key = "/".join(e["fullUrl"].rsplit("/", 2)[-2:])
            r = e.get("resource")
            if r is not None:
                meta = {k: v for k, v in r.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
                r = {**r, "meta": meta}
            out[key].append((version, r is None, r))
        nxt = next((x["url"] for x in resp.body.get("link", []) if x["relation"] == "next"), None)
        if nxt is None:
            break
        query = parse_qsl(urlsplit(nxt).query)
    return {k: sorted(v, key=lambda x: x[0]) for k, v in out.items()}
