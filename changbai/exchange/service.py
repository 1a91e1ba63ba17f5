"""Wiring of the HL7 v2 intake onto a running platform (database, repository, router).

``install(platform)`` is the module's platform extension: it mounts the exchange HTTP routes and starts
the MLLP listener with the HTTP server when ``settings.mllp_port`` is set (``changbai serve``).
``build_intake`` is what the CLI and tests use to get an Intake writing through the platform's store.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from changbai import logs
from changbai.exchange.datatypes import Translate
from changbai.exchange.inbox import SqlInbox
from changbai.exchange.intake import Intake
from changbai.exchange.mllp import Handler, MllpServer
from changbai.exchange.writes import apply_bundle

log = logs.get(__name__)


def build_intake(platform: Any, translate: Translate | None = None) -> Intake:
    """The HL7 v2 intake of a platform; local codes are translated by the ConceptMaps stored in it
    unless another ``translate`` is given."""
    from changbai.exchange.conceptmaps import ConceptMapTranslator

    settings = platform.settings
    translate = translate or ConceptMapTranslator(platform.repo)
    return Intake(
        SqlInbox(platform.repo),
        translate,
        resident_id_system=settings.resident_id_system,
        enhanced_ack=settings.mllp_enhanced_ack,
    )


def install(platform: Any) -> None:
    """Platform extension: the exchange HTTP routes, and the MLLP listener beside the HTTP API
    (on settings.mllp_port; 0 = off)."""
    from changbai.exchange.http import routes

    intake = build_intake(platform)
    platform.routes.extend(routes(platform, intake))
    port = platform.settings.mllp_port
    if not port:
        return
    holder: dict[str, MllpServer] = {}

    async def start() -> None:
        try:
            holder["server"] = await listen(intake.handle, platform.settings.host, port)
        except OSError as exc:  # the HTTP API still serves; the operator sees why MLLP is down
            logs.event(log, "mllp listener not started", logging.ERROR, port=port, error=str(exc))

    async def stop() -> None:
        if "server" in holder:
            await holder["server"].stop()

    platform.on_startup.append(start)
    platform.on_shutdown.append(stop)


def settle(collect: bool = True) -> None:
    """Take what the process holds now out of the cyclic garbage collector's sight (``gc.freeze``).

    A listener holds some 440,000 long-lived objects (FHIR definitions, search parameters, compiled
    paths, code maps), and every full collection walks them all: measured 0.5 s pauses on this machine,
    one every few hundred messages (about 0.8 ms a message on average, and the ACK latency's p99)."""
    if collect:
        gc.collect()
    gc.freeze()


async def listen(handler: Handler, host: str, port: int) -> MllpServer:
    """An MLLP listener for a long-running process: the process is settled now, and once more after the
    first message (which loads what the mapping and the store load lazily)."""
    settle()
    first = True

    def handle(raw: bytes, peer: str) -> bytes:
        nonlocal first
        ack = handler(raw, peer)
        if first:
            first = False
            settle(collect=False)  # no full collection (a pause) while senders wait
        return ack

    return await MllpServer(handle, host, port).start()


async def run_listener(platform: Any, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    server = await listen(build_intake(platform).handle, host, port)
    if ready is not None:
        ready.set()
    try:
        assert server.server is not None
        await server.server.serve_forever()
    finally:
        await server.stop()


def store_bundle(platform: Any, bundle: dict[str, Any], source: str) -> list[Any]:
    """Write a transaction bundle built here (CDA, CSV) through the platform's one transaction path."""
    from changbai.store.pipeline import Context

    with platform.repo.unit(Context(source=source)) as unit:
        return apply_bundle(unit, bundle)


def ingest_cda(platform: Any, data: bytes) -> Any:
    """Store a CDA document whole (Binary + DocumentReference) with its extracted facts, atomically."""
    from changbai.exchange import cda

    extracted = cda.to_bundle(data)
    store_bundle(platform, extracted.bundle, "cda")
    return extracted


def upload_csv(platform: Any, kind: str, data: bytes, facility: str, mode: str = "valid-rows") -> Any:
    """Check a CSV upload row by row and store what the mode allows, in one transaction."""
    from changbai.exchange import csvupload

    upload = csvupload.read(kind, data, facility, mode, platform.settings.resident_id_system)
    if upload.bundle["entry"]:
        store_bundle(platform, upload.bundle, "csv")
    return upload
