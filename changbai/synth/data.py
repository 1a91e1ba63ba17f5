"""Loaders for the figures of the synthetic province (``data/*.json``), so that every number a reader
might question lives in a file with its source in docs/synth.md, not in code."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load(name: str) -> dict[str, Any]:
    """One data file by stem: population, names, clinical, immunisation, infectious, registration, facilities."""
    text = resources.files("changbai.synth").joinpath(f"data/{name}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def band_value(bands: list[list[float]], age: int, default: float = 0.0) -> float:
    """The value of the ``[low, high, value]`` band that holds ``age`` (inclusive bounds)."""
    for low, high, value in bands:
        if low <= age <= high:
            return value
    return default
