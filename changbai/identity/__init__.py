"""The resident master index (EMPI): normalisation, matching, links, golden records, batch dedupe.

Public entry points (imported lazily, so the write pipeline does not load pandas or Splink):

- ``normalise_patient(patient) -> NormalisedPatient``
- ``Matcher(model, index)`` with ``.add``, ``.candidates``, ``.score(a, b)``, ``.match(p)``
- ``dedupe(records) -> clusters`` (Splink batch, same model)
- ``load_model(path=None) -> MatchModel``
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "normalise_patient": ("changbai.identity.normalise", "normalise_patient"),
    "NormalisedPatient": ("changbai.identity.normalise", "NormalisedPatient"),
    "Matcher": ("changbai.identity.matcher", "Matcher"),
    "MatchResult": ("changbai.identity.matcher", "MatchResult"),
    "MemoryIndex": ("changbai.identity.matcher", "MemoryIndex"),
    "dedupe": ("changbai.identity.batch", "dedupe"),
    "load_model": ("changbai.identity.model", "load"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    import importlib

    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(module), attr)
