"""Bulk load of FHIR NDJSON (one file per resource type, as FHIR Bulk Data writes them).

Each chunk of resources is one unit of work through :meth:`Unit.put_many`, so bulk load runs the same
pipeline (validation, identity, audit) as the REST API and keeps the resources' own ids: a rerun finds
every resource unchanged and writes nothing. A line that fails stops nothing else: it is reported with
its file and line number and the rest of its chunk is retried without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from changbai.errors import ChangbaiError, InvalidInput
from changbai.store.pipeline import Context
from changbai.store.repository import Repository

#: Types that others refer to load first (facilities, workers, residents), then the rest alphabetically.
FIRST = ["Organization", "Location", "Practitioner", "PractitionerRole", "Patient", "RelatedPerson"]


@dataclass
class LoadReport:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": self.errors,
        }


def ndjson_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise InvalidInput(f"'{directory}' is not a directory of NDJSON files")
    files = sorted(directory.glob("*.ndjson"))
    order = {name: i for i, name in enumerate(FIRST)}
    return sorted(files, key=lambda p: (order.get(p.stem, len(order)), p.stem))


def read_ndjson(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the error) for each non-empty line."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield number, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield number, InvalidInput(f"line {number} is not valid JSON: {exc}")


def load_directory(
    repo: Repository,
    directory: Path,
    *,
    chunk: int = 1000,
    ctx: Context | None = None,
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    report = LoadReport()
    for path in ndjson_files(directory):
        load_file(repo, path, report, chunk=chunk, ctx=ctx, progress=progress)
    repo.db.analyze()  # fresh statistics, or the query planner guesses badly after a large load
    return report


def load_file(
    repo: Repository,
    path: Path,
    report: LoadReport,
    *,
    chunk: int = 1000,
    ctx: Context | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    batch: list[tuple[int, dict[str, Any]]] = []
    for number, item in read_ndjson(path):
        report.read += 1
        if isinstance(item, Exception):
            report.errors.append({"file": path.name, "line": number, "error": str(item)})
            continue
        batch.append((number, item))
        if len(batch) >= chunk:
            _load_batch(repo, path, batch, report, ctx)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        _load_batch(repo, path, batch, report, ctx)
        if progress:
            progress(len(batch))


def _load_batch(
    repo: Repository, path: Path, batch: list[tuple[int, dict[str, Any]]], report: LoadReport, ctx: Context | None
) -> None:
    ctx = ctx or Context(source="bulk")
    try:
        with repo.unit(ctx) as unit:
            outcomes = unit.put_many([r for _, r in batch])
    except ChangbaiError:
        if len(batch) == 1:
            number, resource = batch[0]
            try:
                with repo.unit(ctx) as unit:
                    outcomes = unit.put_many([resource])
            except ChangbaiError as exc:
                where = exc.issues[0].expression if exc.issues else []
                report.errors.append({"file": path.name, "line": number, "error": exc.message, "where": where})
                return
        else:  # find the bad lines by halves; the good ones still load
            half = len(batch) // 2
            _load_batch(repo, path, batch[:half], report, ctx)
            _load_batch(repo, path, batch[half:], report, ctx)
            return
    for o in outcomes:
        if o.status == "created":
            report.created += 1
        elif o.status == "updated":
            report.updated += 1
        else:
            report.unchanged += 1
