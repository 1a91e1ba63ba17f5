"""How a batch of changes reaches the parent: one interface, HTTP by default.

``send`` returns only when the batch is safe on the other side; then the uplink moves its checkpoint.
``HttpTransport`` posts the batch to the parent's ``[base]/$replicate`` with this node's bearer token; a
2xx answer means the parent committed it (or had it already). Any other answer, a network error or no
token raises :class:`LinkDown`, and the worker keeps its checkpoint and retries (after a 401 with a fresh
token). :class:`changbai.exchange.federation.jetstream.JetStreamTransport` publishes the batch to a NATS
JetStream stream instead (CHANGBAI_FEDERATION_TRANSPORT=jetstream; docs/federation.md).
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
import orjson

from changbai.errors import InvalidInput
from changbai.exchange.federation.credentials import BackendServicesClient, CredentialsUnavailable, NodeCredentials
from changbai.exchange.federation.replicate import Change, batch_bundle


class LinkDown(Exception):
    """The parent did not take the batch; retry later from the same checkpoint."""


class Transport(Protocol):
    def send(self, changes: list[Change]) -> None:
        """Deliver ``changes`` (in outbox order) durably, or raise LinkDown."""
        ...

    def status(self) -> dict[str, Any]:
        """What the operator view shows of this transport."""
        ...

    def close(self) -> None: ...


class HttpTransport:
    def __init__(self, parent_url: str, credentials: NodeCredentials, timeout: float = 30.0) -> None:
        self.url = f"{parent_url.rstrip('/')}/$replicate"
        self.credentials = credentials
        self.client = httpx.Client(timeout=timeout)

    def send(self, changes: list[Change]) -> None:
        batch = batch_bundle(changes)
        headers = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
        try:
            headers.update(self.credentials.headers())
            r = self.client.post(self.url, content=orjson.dumps(batch), headers=headers)
        except CredentialsUnavailable as exc:
            raise LinkDown(f"no access token: {exc}") from None
        except httpx.HTTPError as exc:
            raise LinkDown(f"{type(exc).__name__}: {exc}") from None
        if r.status_code == 401:
            self.credentials.invalidate()
        if r.status_code // 100 != 2:
            raise LinkDown(f"parent answered {r.status_code}: {r.text[:300]}")

    def status(self) -> dict[str, Any]:
        return {"transport": "http"}

    def close(self) -> None:
        self.client.close()


TRANSPORTS = ("http", "jetstream")


def transport_kind(settings: Any) -> str:
    kind = str(settings.federation_transport).strip().lower()
    if kind not in TRANSPORTS:
        raise InvalidInput(f"CHANGBAI_FEDERATION_TRANSPORT must be one of {', '.join(TRANSPORTS)}, not '{kind}'")
    return kind


def transport_for(settings: Any, node_id: str, parent_url: str, credentials: NodeCredentials) -> Transport:
    """The uplink's transport chosen by settings (CHANGBAI_FEDERATION_TRANSPORT: http | jetstream)."""
    if transport_kind(settings) == "http":
        return HttpTransport(parent_url, credentials)
    from changbai.exchange.federation.jetstream import JetStreamTransport

    # With SMART node authentication the batches are signed with the same key the parent registered.
    key = credentials.key if isinstance(credentials, BackendServicesClient) else None
    return JetStreamTransport(settings.nats_url, settings.nats_stream, settings.node_client_id or node_id, key)
