"""How a batch of changes reaches the parent: one interface, HTTP by default.

``HttpTransport`` posts the batch to the parent's ``[base]/$replicate`` with this node's bearer token; a
2xx answer means the parent committed it (or had it already). Any other answer, a network error or no
token raises :class:`LinkDown`, and the worker keeps its checkpoint and retries (after a 401 with a fresh
token). An optional NATS JetStream transport
would implement the same ``send`` (publish with a message id = first..last seq for de-duplication); it is
not shipped yet (docs/federation.md).
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
import orjson

from changbai.exchange.federation.credentials import CredentialsUnavailable, NodeCredentials


class LinkDown(Exception):
    """The parent did not take the batch; retry later from the same checkpoint."""


class Transport(Protocol):
    def send(self, batch: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HttpTransport:
    def __init__(self, parent_url: str, credentials: NodeCredentials, timeout: float = 30.0) -> None:
        self.url = f"{parent_url.rstrip('/')}/$replicate"
        self.credentials = credentials
        self.client = httpx.Client(timeout=timeout)

    def send(self, batch: dict[str, Any]) -> dict[str, Any]:
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
        return dict(r.json()) if r.content else {}

    def close(self) -> None:
        self.client.close()
