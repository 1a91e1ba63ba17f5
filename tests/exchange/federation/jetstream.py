"""The real NATS JetStream server for federation tests: reachable or a clear skip, one stream per test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.exchange.federation.nodes import by_resource

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
    """Every version held by an in-process platform (system history, all pages), per resource."""
    from changbai.api.router import FhirRequest
    from changbai.store.pipeline import Context

    entries: list[dict[str, Any]] = []
    query: list[tuple[str, str]] = [("_count", "1000")]
    while True:
        resp = platform.router.handle(FhirRequest("GET", "_history", query=query), Context(source="cli"))
        assert resp.status == 200, resp.body
        entries.extend(resp.body.get("entry", []))
        nxt = next((x["url"] for x in resp.body.get("link", []) if x["relation"] == "next"), None)
        if nxt is None:
            return by_resource(entries)
        query = parse_qsl(urlsplit(nxt).query)
