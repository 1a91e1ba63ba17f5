"""NDJSON output as FHIR Bulk Data writes it: one file per resource type, one resource per line.

Resources are serialised once with orjson as they are made (no deep copies, no resource kept in memory),
and ids are sequential per type with a short prefix, so the same seed gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson

_OPTS = orjson.OPT_APPEND_NEWLINE


class Output:
    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}
        self.counts: dict[str, int] = {}
        self._next: dict[str, int] = {}

    def new_id(self, prefix: str) -> str:
        n = self._next.get(prefix, 0) + 1
        self._next[prefix] = n
        return f"{prefix}{n}"

    def emit(self, resource: dict[str, Any]) -> None:
        rtype = resource["resourceType"]
        f = self._files.get(rtype)
        if f is None:
            f = self._files[rtype] = open(self.dir / f"{rtype}.ndjson", "wb", buffering=1 << 20)  # noqa: SIM115
            self.counts[rtype] = 0
        f.write(orjson.dumps(resource, option=_OPTS))
        self.counts[rtype] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
