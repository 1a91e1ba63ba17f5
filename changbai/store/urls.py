"""Query strings of FHIR URLs: parsed to (name, value) pairs, keeping order and repeats."""

from __future__ import annotations

from urllib.parse import parse_qsl


def parse_query(query: str) -> list[tuple[str, str]]:
    """``identifier=a|b&_count=5`` -> [("identifier", "a|b"), ("_count", "5")]; a leading ``?`` is ignored."""
    query = query.split("?", 1)[1] if "?" in query else query
    return parse_qsl(query, keep_blank_values=True)
