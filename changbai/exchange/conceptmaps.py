"""The ConceptMap hook of the intake: local codes of a sending facility -> the platform's code systems.

Reads the ConceptMaps stored in the platform (FHIR resources, as the terminology module's local-code
workflow produces them: ``group.source`` = the facility's local system) and answers
``translate(system, code, facility)`` from them. Maps are re-read after ``ttl`` seconds, so a map an
operator has just confirmed is used without a restart.
"""

from __future__ import annotations

import threading
import time
from typing import Any

#: ConceptMap equivalences (R4) / relationships (R5) that do not give a usable target.
NOT_A_MATCH = {"unmatched", "disjoint", "not-related-to"}


class ConceptMapTranslator:
    def __init__(self, repo: Any, ttl: float = 60.0) -> None:
        self.repo = repo
        self.ttl = ttl
        self._maps: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def __call__(self, system: str, code: str, facility: str) -> dict[str, Any] | None:
        return self._table(system).get(code)

    def _table(self, system: str) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            cached = self._maps.get(system)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
        table = self._load(system)
        with self._lock:
            self._maps[system] = (now, table)
        return table

    def _load(self, system: str) -> dict[str, dict[str, Any]]:
        table: dict[str, dict[str, Any]] = {}
        with self.repo.unit(write=False) as unit:
            result = unit.search("ConceptMap", [("source-system", system), ("_count", "100")], strict=False)
            maps = [m.resource for m in result.matches]
        for cm in maps:
            if cm.get("status") == "retired":
                continue
            for group in cm.get("group", []):
                if group.get("source") != system or not group.get("target"):
                    continue
                for element in group.get("element", []):
                    for target in element.get("target", []):
                        kind = target.get("equivalence") or target.get("relationship") or "equivalent"
                        if kind in NOT_A_MATCH or not target.get("code") or element.get("code") in table:
                            continue
                        coding = {"system": group["target"], "code": target["code"]}
                        if target.get("display"):
                            coding["display"] = target["display"]
                        table[element["code"]] = coding
        return table
