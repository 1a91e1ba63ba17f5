"""Sending a notification: rest-hook over HTTP, or a ping to websockets bound to the subscription.

Every rest-hook request carries ``X-Changbai-Event`` (the event number: the outbox sequence of the
change, the same on every retry) and the subscription id, so a receiver that got a notification twice
(its answer was lost, or it was too slow) can recognise the repeat.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from typing import Any

import httpx
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from changbai.exchange.subscriptions.model import Sub

TIMEOUT_SECONDS = 10.0
TOKEN_SECONDS = 600
EVENT_HEADER = "X-Changbai-Event"
SUBSCRIPTION_HEADER = "X-Changbai-Subscription"


class DeliveryFailed(Exception):
    pass


class RestHook:
    def __init__(self, timeout: float = TIMEOUT_SECONDS) -> None:
        self.client = httpx.Client(timeout=timeout)

    def send(self, sub: Sub, event: int, request: tuple[str, str, dict[str, Any] | None]) -> None:
        method, path, body = request
        headers = {**sub.headers, SUBSCRIPTION_HEADER: sub.id}
        if event:
            headers[EVENT_HEADER] = str(event)
        url = sub.endpoint.rstrip("/") + (f"/{path}" if path else "")
        content = None
        if body is not None:
            content = orjson.dumps(body)
            headers["content-type"] = "application/fhir+json"
        try:
            r = self.client.request(method, url if path else sub.endpoint, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if r.status_code // 100 != 2:
            raise DeliveryFailed(f"receiver answered {r.status_code}")

    def close(self) -> None:
        self.client.close()


class WebSocketHub:
    """Websockets bound to subscriptions (R4: ``bind <id>``; R4B/R5: ``bind-with-token <token>``)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bound: dict[str, set[WebSocket]] = {}
        self.tokens: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()

    def token(self, sub_id: str) -> tuple[str, float]:
        token = secrets.token_urlsafe(24)
        expires = time.time() + TOKEN_SECONDS
        with self.lock:
            self.tokens[token] = (sub_id, expires)
        return token, expires

    def _redeem(self, token: str) -> str | None:
        with self.lock:
            sub_id, expires = self.tokens.pop(token, ("", 0.0))
        return sub_id if expires > time.time() else None

    async def endpoint(self, ws: WebSocket) -> None:
        self.loop = asyncio.get_running_loop()
        await ws.accept()
        mine: set[str] = set()
        try:
            while True:
                text = (await ws.receive_text()).strip()
                verb, _, arg = text.partition(" ")
                sub_id = (
                    arg.strip() if verb == "bind" else self._redeem(arg.strip()) if verb == "bind-with-token" else None
                )
                if verb not in ("bind", "bind-with-token"):
                    await ws.send_text(f"error unknown command '{verb}'")
                elif not sub_id:
                    await ws.send_text("error invalid or expired token")
                else:
                    with self.lock:
                        self.bound.setdefault(sub_id, set()).add(ws)
                    mine.add(sub_id)
                    await ws.send_text(f"bound {sub_id}")
        except WebSocketDisconnect:
            pass
        finally:
            with self.lock:
                for sub_id in mine:
                    self.bound.get(sub_id, set()).discard(ws)

    def ping(self, sub_id: str, message: str | None = None) -> None:
        """Tell every socket bound to ``sub_id``; no bound socket is a failed delivery (retried)."""
        with self.lock:
            sockets = list(self.bound.get(sub_id, ()))
        if not sockets or self.loop is None:
            raise DeliveryFailed("no websocket is bound to this subscription")
        sent = 0
        for ws in sockets:
            future = asyncio.run_coroutine_threadsafe(ws.send_text(message or f"ping {sub_id}"), self.loop)
            try:
                future.result(timeout=5)
                sent += 1
            except Exception:
                with self.lock:
                    self.bound.get(sub_id, set()).discard(ws)
        if not sent:
            raise DeliveryFailed("every websocket bound to this subscription is gone")
