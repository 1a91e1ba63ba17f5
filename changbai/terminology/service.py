"""The terminology service on a running node: the store as a TerminologySource, the FHIR operations
($lookup, $validate-code, $subsumes, $expand, $translate) for the router, and the hooks that let
validation check bindings and search expand ``:below`` / ``:in``.

``install(platform)`` is the module's extension function (see changbai.api.app.default_extensions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from changbai.terminology import operations
from changbai.terminology.source import InMemorySource, LayeredSource, Resource, pick_version, split_canonical

if TYPE_CHECKING:
    from changbai.api.app import Platform
    from changbai.api.router import FhirRequest, FhirResponse, Operation, Router
    from changbai.store.repository import Repository, Unit


class StoreSource:
    """Terminology resources read from the store (within one unit of work) by canonical url."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self._seen: dict[tuple[str, str], list[Resource]] = {}

    def _all(self, kind: str, url: str) -> list[Resource]:
        key = (kind, url)
        if key not in self._seen:
            result = self.unit.search(kind, [("url", url), ("_count", "100")])
            self._seen[key] = [m.resource for m in result.matches]
        return self._seen[key]

    def code_system(self, url: str, version: str | None = None) -> Resource | None:
        return pick_version(self._all("CodeSystem", url), version)

    def value_set(self, url: str, version: str | None = None) -> Resource | None:
        return pick_version(self._all("ValueSet", url), version)

    def concept_map(self, url: str, version: str | None = None) -> Resource | None:
        return pick_version(self._all("ConceptMap", url), version)

    def versions(self, resource_type: str, url: str) -> list[str]:
        return InMemorySource(self._all(resource_type, url)).versions(resource_type, url)

    def concept_maps(self) -> Iterable[Resource]:
        result = self.unit.search("ConceptMap", [("_count", "1000")])
        return [m.resource for m in result.matches]

    def supplements(self, url: str) -> list[Resource]:
        result = self.unit.search("CodeSystem", [("supplements", url), ("_count", "100")], strict=False)
        return [m.resource for m in result.matches]


def tx_source(unit: Unit) -> LayeredSource:
    """What the operations see: the store, with the shipped FHIR core terminology behind it (a node knows
    administrative-gender without anyone loading it; a stored resource of the same url wins)."""
    from changbai.terminology.binding import core_source

    return LayeredSource(StoreSource(unit), core_source())


def _handler(call: Callable[..., Resource], kind: str) -> Callable[..., FhirResponse]:
    """Wrap an engine operation as a router handler: (router, unit, req, rtype, id, params)."""

    def handle(
        router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
    ) -> FhirResponse:
        from changbai.api.router import FhirResponse

        instance = unit.read(kind, id).resource if id else None
        kwargs: dict[str, Any] = {}
        if call in (operations.expand, operations.validate_code, operations.validate_code_cs, operations.lookup):
            kwargs["accept_language"] = req.header("accept-language")
        if call is operations.expand:
            kwargs["limit"] = router.settings.terminology_expansion_limit
        return FhirResponse(200, call(tx_source(unit), params, instance, **kwargs))

    return handle


def operation_table() -> list[Operation]:
    """The router entries of the terminology operations (type and instance level)."""
    from changbai.api.router import Operation

    spec = "http://hl7.org/fhir/OperationDefinition/"
    return [
        Operation(
            "lookup",
            _handler(operations.lookup, "CodeSystem"),
            types=("CodeSystem",),
            type_level=True,
            instance=True,
            definition=spec + "CodeSystem-lookup",
        ),
        Operation(
            "subsumes",
            _handler(operations.subsumes, "CodeSystem"),
            types=("CodeSystem",),
            type_level=True,
            instance=True,
            definition=spec + "CodeSystem-subsumes",
        ),
        Operation(
            "validate-code",
            _handler(operations.validate_code_cs, "CodeSystem"),
            types=("CodeSystem",),
            type_level=True,
            instance=True,
            definition=spec + "CodeSystem-validate-code",
        ),
        Operation(
            "validate-code",
            _handler(operations.validate_code, "ValueSet"),
            types=("ValueSet",),
            type_level=True,
            instance=True,
            definition=spec + "ValueSet-validate-code",
        ),
        Operation(
            "expand",
            _handler(operations.expand, "ValueSet"),
            types=("ValueSet",),
            type_level=True,
            instance=True,
            definition=spec + "ValueSet-expand",
        ),
        Operation(  # the tx ecosystem's batch form of $validate-code (no core OperationDefinition in R4)
            "batch-validate-code",
            _handler(lambda source, params, _instance: operations.batch_validate(source, params), "ValueSet"),
            types=("ValueSet",),
            type_level=True,
        ),
        Operation(
            "translate",
            _handler(operations.translate, "ConceptMap"),
            types=("ConceptMap",),
            type_level=True,
            instance=True,
            definition=spec + "ConceptMap-translate",
        ),
    ]


#: Seconds a search-time expansion (``:below``, ``:in``) is reused.
EXPANSION_TTL = 60.0


def token_expander(repo: Repository) -> Callable[[str, str], list[tuple[str | None, str]] | None]:
    """For search: ``:below`` system|code -> the code and its descendants; ``:in`` / ``:not-in`` a value
    set url -> its codes. None when the code system or value set is unknown."""
    from changbai.terminology.expand import Expander, Options, load_index

    # Searches ask for the same hierarchies again and again (ICD-10 chapters): reading a code system from
    # the store and expanding it costs ~15 ms, so expansions are kept for EXPANSION_TTL seconds; a changed
    # code system or value set is seen by searches within that time.
    cache: dict[tuple[str, str], tuple[float, list[tuple[str | None, str]]]] = {}

    def expand_token(modifier: str, value: str) -> list[tuple[str | None, str]] | None:
        now = time.monotonic()
        hit = cache.get((modifier, value))
        if hit is not None and now - hit[0] < EXPANSION_TTL:
            return hit[1]
        found = _expand_token(modifier, value)
        if found is not None:  # an unknown system may be loaded any moment: not remembered
            if len(cache) > 1000:
                cache.clear()
            cache[(modifier, value)] = (now, found)
        return found

    def _expand_token(modifier: str, value: str) -> list[tuple[str | None, str]] | None:
        with repo.unit(write=False) as unit:
            source = tx_source(unit)
            if modifier in ("below", "above"):
                system, _, code = value.partition("|")
                index = load_index(source, system, None) if system else None
                if index is None or index.get(code) is None:
                    return None
                code = index.get(code).code  # type: ignore[union-attr]
                related = index.descendants(code) if modifier == "below" else index.ancestors(code)
                return [(system, c) for c in [code, *related]]
            if modifier in ("in", "not-in"):
                url, version = split_canonical(value)
                vs = source.value_set(url, version)
                if vs is None:
                    return None
                return [(e.system, e.code) for e in Expander(source, Options(limit=10**7)).entries(vs)]
            return None

    return expand_token


def install(platform: Platform) -> None:
    """Register the operations and plug the binding checker and token expander into fhir / store."""
    from changbai.terminology.binding import binding_checker_for, binding_checker_for_url

    for op in operation_table():
        platform.router.register(op)
    platform.router.metadata_modes["terminology"] = lambda _router, _ctx: operations.terminology_capabilities()
    platform.repo.token_expander = token_expander(platform.repo)
    platform.repo.pipeline.binding_checker = binding_checker_for(platform.repo)
    platform.repo.pipeline.binding_checker_factory = binding_checker_for_url
