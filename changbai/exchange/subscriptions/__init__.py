"""Reliable FHIR Subscriptions for outside systems (R4 criteria subscriptions, R4B-backport topics).

``install(platform)`` (listed in :func:`changbai.api.app.default_extensions`) adds a prepare step that
checks every Subscription written (``requested`` and ``active`` ones are served alike), the
``Subscription/[id]/$get-ws-binding-token`` operation, the websocket at ``/subscriptions/ws``, the
operator API under ``/subscriptions/`` and the feeder and deliverer threads. See docs/federation.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.routing import WebSocketRoute

if TYPE_CHECKING:
    from changbai.api.app import Platform


def install(platform: Platform) -> None:
    from changbai.exchange.subscriptions import tables  # noqa: F401  (tables on the store's metadata)
    from changbai.exchange.subscriptions.api import operator_routes, ws_binding_token
    from changbai.exchange.subscriptions.channels import WebSocketHub
    from changbai.exchange.subscriptions.queue import Deliverer, Feeder, SubscriptionWorker

    settings = platform.settings
    hub = WebSocketHub()
    platform.repo.pipeline.add("prepare", "subscription-check", _check_subscription)
    platform.router.register(ws_binding_token(hub))
    platform.routes.append(WebSocketRoute("/subscriptions/ws", hub.endpoint))
    platform.routes.extend(operator_routes(platform))
    deliverer = Deliverer(
        platform.repo,
        hub,
        settings.subscription_retry_seconds,
        settings.subscription_max_backoff_seconds,
        settings.subscription_give_up_seconds,
        lambda: settings.base_url or f"http://{settings.host}:{settings.port}/fhir",
        settings.subscription_hosts,
    )
    worker = SubscriptionWorker(Feeder(platform.repo, settings.subscription_hosts), deliverer)
    platform.on_startup.append(worker.start)
    platform.on_shutdown.append(worker.stop)
    platform.subscriptions = worker  # type: ignore[attr-defined]


def _check_subscription(conn: Any, ctx: Any, op: Any) -> None:
    """A Subscription this server cannot serve is refused when written, not discovered at delivery."""
    if op.rtype != "Subscription" or op.resource is None:
        return
    from changbai.exchange.subscriptions.model import parse
    from changbai.store.search import SearchRequest

    sub = parse(op.resource)
    SearchRequest.parse(sub.rtype, sub.params, strict=True)  # unknown or malformed parameters: 400 now
