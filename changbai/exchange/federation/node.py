"""Who this node is in the federation: id, tier, region (GB/T 2260), parent, origin URL.

Everything comes from settings (CHANGBAI_NODE_*, CHANGBAI_PARENT_URL), so the topology of a province is
configuration: a county node names its city as parent, the city names the province.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from changbai.errors import InvalidInput
from changbai.settings import Settings

TIERS = ("county", "city", "province", "national")
DIVISIONS = Path(__file__).resolve().parents[2] / "terminology" / "data" / "divisions.csv"


@lru_cache(maxsize=1)
def _region_codes() -> frozenset[str]:
    with DIVISIONS.open(encoding="utf-8") as f:
        return frozenset(row["code"] for row in csv.DictReader(f))


@dataclass(frozen=True)
class Node:
    id: str
    tier: str
    region: str
    parent_url: str
    base_url: str

    @property
    def federated(self) -> bool:
        return bool(self.id)

    @property
    def origin_url(self) -> str:
        """What replicated resources carry as meta.source: the node's public FHIR base, or a URN."""
        return self.base_url.rstrip("/") if self.base_url else f"urn:changbai:node:{self.id}"

    @property
    def answers_retrieval(self) -> bool:
        """Cross-region retrieval is answered at the province (or a node with no parent)."""
        return not self.parent_url or self.tier in ("province", "national")


def node_from_settings(settings: Settings) -> Node:
    """The node described by settings; a bad tier or region is a clear configuration error."""
    tier = settings.node_tier.strip().lower()
    if tier not in TIERS:
        raise InvalidInput(f"CHANGBAI_NODE_TIER must be one of {', '.join(TIERS)}, not '{settings.node_tier}'")
    region = settings.node_region.strip()
    if region and region not in _region_codes():
        raise InvalidInput(f"CHANGBAI_NODE_REGION '{region}' is not a GB/T 2260 division code")
    node_id = settings.node_id.strip()
    if node_id and (len(node_id) > 100 or not all(c.isalnum() or c in "-._" for c in node_id)):
        raise InvalidInput(f"CHANGBAI_NODE_ID '{node_id}' must be letters, digits, '-', '.', '_' (at most 100)")
    return Node(node_id, tier, region, settings.parent_url.rstrip("/"), settings.base_url.rstrip("/"))
