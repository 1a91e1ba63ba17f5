"""Node federation: county -> city -> province (-> national) replication and cross-region retrieval.

``install(platform)`` is listed in :func:`changbai.api.app.default_extensions`. On a node with a node id
it registers ``$replicate`` and ``$cross-region-retrieve``, the operator view at ``/federation/status``,
a prepare step that stamps meta.source with the node's origin URL on local writes, when the node has a
parent, the upward link worker, and with the JetStream transport the receiver of its children's batches
(both started and stopped with the platform). See docs/federation.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.routing import Route

if TYPE_CHECKING:
    from changbai.api.app import Platform


def install(platform: Platform) -> None:
    from changbai.exchange.federation import tables  # noqa: F401  (tables on the store's metadata)
    from changbai.exchange.federation.credentials import credentials_for
    from changbai.exchange.federation.node import node_from_settings
    from changbai.exchange.federation.operations import operations, status_route
    from changbai.exchange.federation.policy import load_policy

    settings = platform.settings
    node = node_from_settings(settings)
    platform.routes.append(Route("/federation/status", status_route(platform, node), methods=["GET"]))
    if not node.federated:
        return
    credentials = credentials_for(settings, node.id) if node.parent_url else None
    for op in operations(platform, node, credentials):
        platform.router.register(op)
    platform.repo.pipeline.add("prepare", "federation-origin", _stamp_origin(node.origin_url))
    from changbai.exchange.federation.transport import transport_for, transport_kind

    if transport_kind(settings) == "jetstream":  # batches from this node's children come from the stream
        from changbai.exchange.federation.inbound import JetStreamReceiver

        receiver = JetStreamReceiver(platform, node)
        platform.on_startup.append(receiver.start)
        platform.on_shutdown.append(receiver.stop)
        platform.receiver = receiver  # type: ignore[attr-defined]
    if not node.parent_url or credentials is None:
        return
    from changbai.exchange.federation.worker import UplinkWorker

    policy = load_policy(settings.federation_policy)
    transport = transport_for(settings, node.id, node.parent_url, credentials)
    worker = UplinkWorker(platform.repo, node, policy, transport, settings.federation_poll_seconds)
    platform.on_startup.append(worker.start)
    platform.on_shutdown.append(worker.stop)
    platform.uplink = worker  # type: ignore[attr-defined]


def _stamp_origin(origin_url: str) -> Any:
    def step(conn: Any, ctx: Any, op: Any) -> None:
        """Local writes carry the node they were recorded at (replicated ones keep their origin's)."""
        if op.resource is None or ctx.source == "federation":
            return
        meta = op.resource.get("meta")
        if not isinstance(meta, dict) or "source" not in meta:
            op.resource["meta"] = {**(meta if isinstance(meta, dict) else {}), "source": origin_url}

    return step
