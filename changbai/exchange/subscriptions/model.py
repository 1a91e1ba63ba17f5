"""A Subscription resource read into what delivery needs, and the checks a new one must pass.

Two kinds, both R4 resources:

- R4 criteria subscriptions: ``criteria`` is a search (``Observation?code=...``); ``channel.type``
  rest-hook or websocket; with ``channel.payload`` set, a rest-hook notification is a PUT of the resource
  to ``[endpoint]/[type]/[id]`` (DELETE for a deletion), without it an empty POST to the endpoint.
- Topic-based (the R4B Subscriptions backport on R4): ``criteria`` is the canonical URL of a topic in
  ``topics.json``, filters in ``_criteria`` extensions, payload content and heartbeat period in
  ``channel`` extensions; notifications are backport ``history`` Bundles (a SubscriptionStatus
  Parameters first, then the resource when the content is full-resource).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from changbai.errors import InvalidResource
from changbai.fhir.spec import is_resource_type

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
EXT_FILTER = BACKPORT + "backport-filter-criteria"
EXT_CONTENT = BACKPORT + "backport-payload-content"
EXT_HEARTBEAT = BACKPORT + "backport-heartbeat-period"
CHANNELS = ("rest-hook", "websocket")
TOPICS_FILE = Path(__file__).parent / "topics.json"


@dataclass(frozen=True)
class Topic:
    url: str
    resource: str
    criteria: tuple[tuple[str, str], ...]
    interactions: frozenset[str]


@lru_cache(maxsize=1)
def topics() -> dict[str, Topic]:
    """The topics this server offers (a data file the operators extend)."""
    data = orjson.loads(TOPICS_FILE.read_bytes())
    return {
        t["url"]: Topic(
            t["url"],
            t["resource"],
            tuple(parse_qsl(t.get("criteria", ""))),
            frozenset(t.get("interactions", ["create", "update", "delete"])),
        )
        for t in data["topics"]
    }


@dataclass
class Sub:
    id: str
    rtype: str
    params: list[tuple[str, str]]
    channel: str
    endpoint: str
    payload: str | None
    headers: dict[str, str] = field(default_factory=dict)
    topic: str | None = None
    content: str = "id-only"
    heartbeat: int | None = None
    interactions: frozenset[str] = frozenset({"create", "update", "delete"})
    since: int = 0  # outbox seq of the subscription's creation: earlier changes are not owed to it


def endpoint_allowed(sub: Sub, hosts: str) -> bool:
    """Whether ``sub`` may be served under CHANGBAI_SUBSCRIPTION_HOSTS (websockets always may)."""
    if sub.channel != "rest-hook":
        return True
    allowed = {h.strip().lower() for h in hosts.split(",") if h.strip()}
    host = (urlsplit(sub.endpoint).hostname or "").lower()
    return "*" in allowed or host in allowed


def _ext(node: dict[str, Any], url: str) -> list[Any]:
    return [
        next((v for k, v in e.items() if k.startswith("value")), None)
        for e in node.get("extension", [])
        if e.get("url") == url
    ]


def parse(resource: dict[str, Any]) -> Sub:
    """Read a Subscription; a criteria or channel this server cannot serve is a clear 400."""
    sid = str(resource.get("id", ""))
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria:
        raise InvalidResource("Subscription.criteria is required", expression="Subscription.criteria")
    channel = resource.get("channel") or {}
    ctype = channel.get("type")
    if ctype not in CHANNELS:
        raise InvalidResource(
            f"Subscription.channel.type '{ctype}' is not supported (use {' or '.join(CHANNELS)})",
            expression="Subscription.channel.type",
            code="not-supported",
        )
    endpoint = channel.get("endpoint", "")
    if ctype == "rest-hook" and not (isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))):
        raise InvalidResource(
            "A rest-hook Subscription needs an http(s) channel.endpoint", expression="Subscription.channel.endpoint"
        )
    headers = {}
    for h in channel.get("header", []):
        name, sep, value = str(h).partition(":")
        if not sep or not name.strip():
            raise InvalidResource(
                f"channel.header '{h}' is not 'Name: value'", expression="Subscription.channel.header"
            )
        headers[name.strip()] = value.strip()
    sub = Sub(sid, "", [], ctype, endpoint, channel.get("payload"), headers)
    if criteria in topics():
        topic = topics()[criteria]
        sub.topic, sub.rtype, sub.interactions = topic.url, topic.resource, topic.interactions
        sub.params = list(topic.criteria)
        for f in _ext(resource.get("_criteria") or {}, EXT_FILTER):
            ftype, _, query = str(f).partition("?")
            if ftype != topic.resource:
                raise InvalidResource(f"Filter '{f}' is not on {topic.resource}", expression="Subscription.criteria")
            sub.params.extend(parse_qsl(query))
        content = _ext(channel.get("_payload") or {}, EXT_CONTENT)
        sub.content = content[0] if content and content[0] in ("empty", "id-only", "full-resource") else "id-only"
        beat = _ext(channel, EXT_HEARTBEAT)
        sub.heartbeat = int(beat[0]) if beat and isinstance(beat[0], int) and beat[0] > 0 else None
        return sub
    rtype, _, query = criteria.partition("?")
    if not is_resource_type(rtype):
        raise InvalidResource(
            f"Subscription.criteria '{criteria}' is neither a search on a resource type nor a known topic",
            expression="Subscription.criteria",
        )
    sub.rtype, sub.params = rtype, parse_qsl(query, keep_blank_values=True)
    return sub
