"""Bulk load of FHIR NDJSON (one file per resource type, as FHIR Bulk Data writes them).

Each chunk of resources is one unit of work through :meth:`Unit.put_many`, so bulk load runs the same
pipeline (validation, identity, audit) as the REST API and keeps the resources' own ids: a rerun finds
every resource unchanged and writes nothing. A line that fails stops nothing else: it is reported with
its file and line number and the rest of its chunk is retried without it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from changbai.errors import ChangbaiError, InvalidInput
from changbai.fhir import validation
from changbai.store.indexer import index_rows
from changbai.store.pipeline import Ahead, Context
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


def load_directory(
    repo: Repository,
    directory: Path,
    *,
    chunk: int = 1000,
    ctx: Context | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> LoadReport:
    """Load every NDJSON file of ``directory``. ``workers`` processes (default: one per CPU for loads
    big enough to pay for starting them; 0: none) validate and index chunks ahead while this process
    writes; the pipeline still runs every step here, and redoes any work whose content a step changed."""
    report = LoadReport()
    files = ndjson_files(directory)
    with _ahead_pool(repo, files, workers) as pool:
        for path in files:
            load_file(repo, path, report, chunk=chunk, ctx=ctx, progress=progress, pool=pool)
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
    pool: Any = None,
) -> None:
    pending: deque[tuple[list[tuple[int, bytes]], Any]] = deque()
    depth = 2 * (os.cpu_count() or 1) + 1 if pool else 1  # chunks in flight: keep every worker busy

    def write_oldest() -> None:
        lines, result = pending.popleft()
        worked = result.get() if result is not None else None
        batch: list[tuple[int, dict[str, Any], Ahead | None]] = []
        for n, (number, line) in enumerate(lines):
            report.read += 1
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                error = f"line {number} is not valid JSON: {exc}"
                report.errors.append({"file": path.name, "line": number, "error": error})
                continue
            done = worked[n] if worked is not None else None
            batch.append((number, item, Ahead(item, *done) if done is not None else None))
        if batch:
            _load_batch(repo, path, batch, report, ctx)
        if progress:
            progress(len(lines))

    for lines in _raw_chunks(path, chunk):
        pending.append((lines, pool.apply_async(_work_ahead, ([line for _, line in lines],)) if pool else None))
        if len(pending) >= depth:
            write_oldest()
    while pending:
        write_oldest()


def _raw_chunks(path: Path, size: int) -> Iterator[list[tuple[int, bytes]]]:
    """(line number, raw line) of the non-empty lines, ``size`` at a time."""
    batch: list[tuple[int, bytes]] = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                batch.append((number, line))
                if len(batch) >= size:
                    yield batch
                    batch = []
    if batch:
        yield batch


def _load_batch(
    repo: Repository,
    path: Path,
    batch: list[tuple[int, dict[str, Any], Ahead | None]],
    report: LoadReport,
    ctx: Context | None,
) -> None:
    ctx = ctx or Context(source="bulk")
    try:
        with repo.unit(ctx) as unit:
            outcomes = unit.put_many([r for _, r, _ in batch], [a for _, _, a in batch])
    except ChangbaiError as exc:
        if len(batch) == 1:
            where = exc.issues[0].expression if exc.issues else []
            report.errors.append({"file": path.name, "line": batch[0][0], "error": exc.message, "where": where})
            return
        half = len(batch) // 2  # find the bad lines by halves; the good ones still load
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


# ------------------------------------------------------------------------------ work done ahead
#: Below this much NDJSON, starting worker processes costs more than it saves.
AHEAD_MIN_BYTES = 8 << 20

_checker: validation.BindingChecker | None = None
_steps: dict[str, Callable[[dict[str, Any]], Any]] = {}


@contextmanager
def _ahead_pool(repo: Repository, files: list[Path], workers: int | None) -> Iterator[Any]:
    factory = repo.pipeline.binding_checker_factory
    if workers is None:
        big = sum(p.stat().st_size for p in files) >= AHEAD_MIN_BYTES
        workers = (os.cpu_count() or 1) if big else 0
    if workers <= 0 or (repo.pipeline.binding_checker is not None and factory is None):
        yield None  # no way to validate the same way elsewhere: all work stays here
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding database connections
    pool = context.Pool(workers, initializer=_start_worker, initargs=(repo.db.url, factory, repo.pipeline.ahead))
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


def _start_worker(
    database_url: str, factory: Callable[[str], Any] | None, steps: dict[str, Callable[[dict[str, Any]], Any]]
) -> None:
    global _checker
    _checker = factory(database_url) if factory is not None else None
    _steps.update(steps)


Worked = tuple[list[Any], dict[str, list[tuple[Any, ...]]], dict[str, Any]]


def _work_ahead(lines: list[bytes]) -> list[Worked | None]:
    """Validation issues, content index rows and the steps' ahead work per line; None where this process
    should do it itself (unparsable or odd input), so that every refusal is reported by the one path."""
    out: list[Worked | None] = []
    for line in lines:
        try:
            resource = orjson.loads(line)
            issues = validation.validate(resource, binding_checker=_checker)
            if validation.errors_of(issues):
                out.append((issues, {}, {}))
                continue
            rows = index_rows(resource, part="content")
            steps = {name: fn(resource) for name, fn in _steps.items()}
            out.append((issues, rows, steps))
        except Exception:  # whatever it is, the main process meets it again and says so
            out.append(None)
    return out
