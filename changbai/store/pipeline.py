"""The one write pipeline, as named steps that other modules plug functions into.

Every write, whatever door it came through (REST, bundles, bulk load, HL7 v2, federation), runs:

    parse -> validate -> authorise -> identify -> store (resource, version, indexes) -> audit -> outbox

``prepare`` steps run before the rows are written and may change the resource (identity assigns links)
or refuse it (validation, authorisation) by raising a ChangbaiError; ``commit`` steps run inside the same
transaction after the rows (audit, extra outbox records). Reads have their own hook points: ``read``
steps see each resource leaving the store (authorisation, audit) and ``search`` steps can narrow a
search (access scope). This is HAPI's interceptor chain as plain functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from changbai.fhir import validation

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from changbai.store.search import SearchRequest


@dataclass
class Context:
    """Who acts, through which door, and why: handed to every step (security and audit read it)."""

    principal: Any = None  # set by the security module; None means the platform itself
    source: str = "rest"  # rest | bundle | bulk | hl7v2 | federation | cli | system
    request_id: str | None = None
    base_url: str = ""
    client_address: str | None = None
    purpose: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ahead:
    """Pure work done ahead, elsewhere, for exactly one resource content (bulk load's worker processes):
    its validation issues, its index rows apart from meta, and what steps with an ``ahead`` function
    computed from it. The pipeline uses them only while the resource is still that content; anything a
    step changes is validated, indexed or computed afresh."""

    source: dict[str, Any]  # the parsed resource the work was done for
    issues: list[Any]  # validation.validate's result, bindings included
    rows: dict[str, list[tuple[Any, ...]]]  # indexer.index_rows(source, part="content")
    steps: dict[str, Any] = field(default_factory=dict)  # step name -> its ahead function's result

    def holds_for(self, resource: dict[str, Any]) -> bool:
        """Whether the work still describes ``resource``: the content it was done for, meta aside."""
        return resource is self.source or without_meta(resource) == without_meta(self.source)


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


@dataclass
class WriteOp:
    """One write as it moves through the pipeline."""

    action: str  # create | update | patch | delete
    rtype: str
    id: str
    resource: dict[str, Any] | None  # the new content (None for delete)
    previous: dict[str, Any] | None  # the current content, when there is one
    method: str = "PUT"  # the REST method it came as: POST PUT PATCH DELETE (history shows it)
    version: int = 0  # the version being written (set by the store)
    last_updated: str = ""
    warnings: list[Any] = field(default_factory=list)
    ahead: Ahead | None = None

    def ahead_of(self, step: str, seen: dict[str, Any] | None = None) -> Any:
        """What ``step``'s ahead function computed for this resource, while its content (meta aside) is
        still the one it was computed from; None otherwise. ``seen``: the resource as the step reads it,
        where that differs from ``resource`` (the master index reads protected values in clear, so the
        work done ahead on the clear values still holds after the security step protected them)."""
        ahead = self.ahead
        resource = self.resource if seen is None else seen
        if ahead is None or step not in ahead.steps or resource is None or not ahead.holds_for(resource):
            return None
        return ahead.steps[step]


class FieldProtection(Protocol):
    """Protected fields (resident ID numbers, phone numbers) as the security module keeps them: modules
    that keep such values in tables of their own (the master index) keep them the same way."""

    def token(self, kind: str, value: str) -> str:
        """The keyed blind index of a value: equal values, equal tokens; nothing else to learn."""
        ...

    def encrypt(self, kind: str, value: str) -> str: ...

    def decrypt(self, kind: str, blob: str) -> str | None: ...

    def revealed(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The stored resource with its protected values in clear text: the resource itself when it
        holds none, else a copy (only the changed elements are new objects)."""
        ...


WriteStep = Callable[["Connection", Context, WriteOp], None]
ReadStep = Callable[["Connection", Context, str, dict[str, Any]], None]
SearchStep = Callable[["Connection", Context, "SearchRequest"], None]


@dataclass
class Pipeline:
    prepare: list[tuple[str, WriteStep]] = field(default_factory=list)
    commit: list[tuple[str, WriteStep]] = field(default_factory=list)
    read: list[tuple[str, ReadStep]] = field(default_factory=list)
    search: list[tuple[str, SearchStep]] = field(default_factory=list)
    #: checks coded values against their bindings during validation (set by the terminology module)
    binding_checker: validation.BindingChecker | None = None
    #: makes an equivalent checker for another process from a database URL (a picklable module-level
    #: function, set with ``binding_checker``), so that work done ahead validates the same way
    binding_checker_factory: Callable[[str], validation.BindingChecker] | None = None
    #: how protected fields are kept (set by the security module; None: kept as written)
    fields: FieldProtection | None = None
    #: step name -> a pure, picklable module-level function of a resource whose result the step can use
    #: instead of computing it (``WriteOp.ahead_of``); bulk load runs them in its worker processes
    ahead: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not any(name == "validate" for name, _ in self.prepare):
            self.prepare.insert(0, ("validate", self.validate_step))

    def validate_step(self, conn: Connection, ctx: Context, op: WriteOp) -> None:
        """R4 validation (structure, and bindings when a checker is set); errors refuse the write,
        warnings ride along in the outcome."""
        if op.resource is None:
            return
        if op.ahead is not None and op.ahead.source is op.resource:
            op.warnings.extend(validation.judge(op.ahead.issues))
        else:
            op.warnings.extend(validation.check(op.resource, binding_checker=self.binding_checker))

    def add(
        self,
        phase: str,
        name: str,
        step: Any,
        *,
        before: str | None = None,
        ahead: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        """Plug ``step`` into ``phase`` (prepare | commit | read | search), optionally before a named step.
        ``ahead`` is pure work of the step that may be done elsewhere beforehand (see ``Pipeline.ahead``)."""
        steps: list[tuple[str, Any]] = getattr(self, phase)
        if any(n == name for n, _ in steps):
            raise ValueError(f"step {name!r} already in {phase}")
        if ahead is not None:
            self.ahead[name] = ahead
        if before is None:
            steps.append((name, step))
            return
        index = next((i for i, (n, _) in enumerate(steps) if n == before), len(steps))
        steps.insert(index, (name, step))

    def run_prepare(self, conn: Connection, ctx: Context, op: WriteOp) -> None:
        for _, step in self.prepare:
            step(conn, ctx, op)

    def run_commit(self, conn: Connection, ctx: Context, op: WriteOp) -> None:
        for _, step in self.commit:
            step(conn, ctx, op)

    def run_read(self, conn: Connection, ctx: Context, rtype: str, resource: dict[str, Any]) -> None:
        for _, step in self.read:
            step(conn, ctx, rtype, resource)

    def run_search(self, conn: Connection, ctx: Context, request: SearchRequest) -> None:
        for _, step in self.search:
            step(conn, ctx, request)
