"""Index rows of a resource: every search parameter's expression evaluated, values turned into rows.

One strategy per parameter type (string, token, reference, date, number, quantity, uri), each taking the
typed items the FHIRPath expression produced and returning the values of rows for its ``idx_*`` table. No
strategy knows any particular parameter; composite parameters are searched through their components' rows.

Rows are tuples in the order of their table's columns (``schema.insert_columns``) without the leading
``rid``, which the store adds: the hot path of ingest moves millions of them (to the database, and from
bulk load's worker processes), and tuples cost a fraction of dicts there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from changbai.errors import InvalidInput
from changbai.fhir.fhirpath import Item, Unsupported, compile_relative, reference_type
from changbai.fhir.searchparams import SearchParam, registry, root_keys, split_union
from changbai.fhir.values import date_range, normalise_string, number_range
from changbai.store import ucum

#: Parameters answered from the resource table's own columns, never indexed.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})
MAX_TEXT = 512

#: The values of one index row after rid: (rtype, param, <the table's own columns>, grp)
Row = tuple[Any, ...]
#: What a strategy yields: the table's own columns; ``("token", values)`` for a row of another table
Values = tuple[Any, ...]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]


def _unwrap_extension(items: list[Item]) -> list[Item]:
    """An expression ending at ``extension(url)`` indexes the extension's value[x]."""
    out = []
    for item in items:
        if item.type == "Extension" and isinstance(item.value, dict):
            for key, value in item.value.items():
                if key.startswith("value"):
                    t = key[5:]
                    out.append(Item(value, t[0].lower() + t[1:] if t[0].isupper() and _is_primitive(t) else t))
        else:
            out.append(item)
    return out


def _is_primitive(type_suffix: str) -> bool:
    from changbai.fhir.spec import spec

    return (type_suffix[0].lower() + type_suffix[1:]) in spec().primitives


# ------------------------------------------------------------------------------------------ strategies
def string_rows(items: list[Item]) -> Iterable[Values]:
    for item in items:
        v, t = item.value, item.type
        texts: list[str] = []
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, dict):
            if t == "HumanName":
                texts.extend(x for x in (v.get("text"), v.get("family")) if isinstance(x, str))
                for key in ("given", "prefix", "suffix"):
                    texts.extend(x for x in v.get(key, ()) if isinstance(x, str))
            elif t == "Address":
                texts.extend(
                    x
                    for x in (
                        v.get("text"),
                        v.get("city"),
                        v.get("district"),
                        v.get("state"),
                        v.get("postalCode"),
                        v.get("country"),
                    )
                    if isinstance(x, str)
                )
                texts.extend(x for x in v.get("line", ()) if isinstance(x, str))
            else:
                texts.extend(x for x in v.values() if isinstance(x, str))
        for text in texts:
            yield (_clip(normalise_string(text)), _clip(text))


def token_rows(items: list[Item]) -> Iterable[Values]:
    for item in items:
        v, t = item.value, item.type
        if isinstance(v, bool):
            yield (None, "true" if v else "false", None)
        elif isinstance(v, str):
            yield (None, _clip(v), None)
        elif isinstance(v, dict):
            if t == "CodeableConcept" or "coding" in v:
                text = v.get("text")
                displays = set()
                for c in v.get("coding", ()):
                    row = _coding_row(c, text)
                    displays.add(row[2])
                    yield row
                if isinstance(text, str):  # :text searches CodeableConcept.text as well as each display
                    folded = _clip(normalise_string(text))
                    if folded not in displays:
                        yield (None, None, folded)
            elif t in ("Identifier", "ContactPoint") or "value" in v:
                value = v.get("value")
                if isinstance(value, str):
                    type_text = (v.get("type") or {}).get("text") if t == "Identifier" else None
                    yield (
                        _clip(v["system"]) if isinstance(v.get("system"), str) else None,
                        _clip(value),
                        _clip(normalise_string(type_text)) if isinstance(type_text, str) else None,
                    )
                if t == "Identifier":
                    for c in (v.get("type") or {}).get("coding", ()):
                        # :of-type searches by identifier type system|code + value
                        if isinstance(c.get("code"), str) and isinstance(value, str):
                            yield (f"of-type:{c.get('system', '')}|{c['code']}", _clip(value), None)
            else:
                yield _coding_row(v, None)


def _coding_row(c: dict[str, Any], text: Any) -> Values:
    display = c.get("display") if isinstance(c.get("display"), str) else text
    return (
        _clip(c["system"]) if isinstance(c.get("system"), str) else None,
        _clip(c["code"]) if isinstance(c.get("code"), str) else None,
        _clip(normalise_string(display)) if isinstance(display, str) else None,
    )


def reference_rows(items: list[Item]) -> Iterable[Values]:
    for item in items:
        v = item.value
        if isinstance(v, str):  # canonical / uri used as a reference
            yield (None, None, None, _clip(v), None)
            continue
        if not isinstance(v, dict):
            continue
        ref = v.get("reference")
        if isinstance(ref, str) and not ref.startswith("#"):
            target_type = reference_type(v)
            base, _, version = ref.partition("/_history/")
            parts = base.rstrip("/").split("/")
            is_absolute = "://" in ref or ref.startswith("urn:")
            target_id = parts[-1] if target_type and len(parts) >= 2 else None
            yield (
                target_type,
                _clip(target_id) if target_id else None,
                version or None,
                _clip(ref) if is_absolute else None,
                None,  # target_rid: the store's to resolve (Unit.flush), as only it knows the rids
            )
        ident = v.get("identifier")
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            # :identifier modifier: kept in the token table under "<parameter>:identifier"
            system = ident.get("system")
            yield IDENTIFIER, (_clip(system) if isinstance(system, str) else None, _clip(ident["value"]), None)


def date_rows(items: list[Item]) -> Iterable[Values]:
    for item in items:
        v, t = item.value, item.type
        try:
            if isinstance(v, str):
                yield date_range(v)
            elif isinstance(v, dict) and t == "Period":
                start, end = v.get("start"), v.get("end")
                if start is None and end is None:
                    continue
                from changbai.fhir.values import MAX_MS, MIN_MS

                low = date_range(start)[0] if isinstance(start, str) else MIN_MS
                high = date_range(end)[1] if isinstance(end, str) else MAX_MS
                yield (low, high)
            elif isinstance(v, dict) and t == "Timing":
                events = [e for e in v.get("event", ()) if isinstance(e, str)]
                if events:
                    ranges = [date_range(e) for e in events]
                    yield (min(r[0] for r in ranges), max(r[1] for r in ranges))
        except InvalidInput:
            continue


def number_rows(items: list[Item]) -> Iterable[Values]:
    for item in items:
        v = item.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        value, low, high = number_range(repr(v) if isinstance(v, float) else str(v))
        yield (float(value), float(low), float(high))


def quantity_rows(items: list[Item]) -> Iterable[Values]:
    for item in items:
        v, t = item.value, item.type
        if not isinstance(v, dict):
            continue
        if t == "Range":
            for bound in ("low", "high"):
                if isinstance(v.get(bound), dict):
                    yield from quantity_rows([Item(v[bound], "Quantity")])
            continue
        if t == "Money" or ("currency" in v and "value" in v):
            val = v.get("value")
            if isinstance(val, int | float) and not isinstance(val, bool):
                _, low, high = number_range(str(val))
                currency = v.get("currency")
                yield ("urn:iso:std:iso:4217", currency, currency, float(val), float(low), float(high), None, None)
            continue
        val = v.get("value")
        if not isinstance(val, int | float) or isinstance(val, bool):
            continue
        _, low, high = number_range(str(val))
        system, code = v.get("system"), v.get("code")
        canonical = ucum.canonical(float(val), code) if system == ucum.SYSTEM and isinstance(code, str) else None
        yield (
            system if isinstance(system, str) else None,
            code if isinstance(code, str) else None,
            v.get("unit") if isinstance(v.get("unit"), str) else None,
            float(val),
            float(low),
            float(high),
            canonical[1] if canonical else None,
            canonical[0] if canonical else None,
        )


def uri_rows(items: list[Item]) -> Iterable[Values]:
    for item in items:
        if isinstance(item.value, str):
            yield (_clip(item.value),)


#: A strategy's marker for a row of the token table under "<parameter>:identifier" (reference.identifier)
IDENTIFIER: Any = object()

STRATEGIES: dict[str, Callable[[list[Item]], Iterable[Any]]] = {
    "string": string_rows,
    "token": token_rows,
    "reference": reference_rows,
    "date": date_rows,
    "number": number_rows,
    "quantity": quantity_rows,
    "uri": uri_rows,
}


META = frozenset({"meta"})


@dataclass(slots=True)
class _Planned:
    """A parameter as indexing meets it: its strategy and what a resource must hold to have a value."""

    code: str
    param: SearchParam
    strategy: Callable[[list[Item]], Iterable[Any]] | None  # None for composites
    on_meta: bool
    #: The keys one of which the resource must hold to have a value (None: always try)
    roots: frozenset[str] | None
    #: Composites: alternatives, each a list of key sets that must all meet the resource's keys.
    needs: tuple[tuple[frozenset[str], ...], ...] | None = None


_PLANS: dict[str, list[_Planned]] = {}


def _plan(rtype: str) -> list[_Planned]:
    """The parameters of a type worth evaluating, in the registry's order (built once per type)."""
    plan = _PLANS.get(rtype)
    if plan is None:
        plan = []
        for code, param in registry().params(rtype).items():
            if code in COLUMN_PARAMS or not param.expression:
                continue
            if param.type == "composite":
                if component_params(param) is not None:
                    plan.append(_Planned(code, param, None, False, None, _composite_needs(param)))
                continue
            strategy = STRATEGIES.get(param.type)
            if strategy is not None:
                plan.append(_Planned(code, param, strategy, param.roots == META, param.roots))
        _PLANS[rtype] = plan
    return plan


_PART_PLANS: dict[tuple[str, bool], list[_Planned]] = {}


def _plan_part(rtype: str, on_meta: bool) -> list[_Planned]:
    """The plan's parameters on ``Resource.meta`` (or all the others): a writer completing work done
    ahead evaluates only the meta ones, on every resource of a load."""
    plan = _PART_PLANS.get((rtype, on_meta))
    if plan is None:
        plan = _PART_PLANS[(rtype, on_meta)] = [p for p in _plan(rtype) if p.on_meta == on_meta]
    return plan


def _composite_needs(param: SearchParam) -> tuple[tuple[frozenset[str], ...], ...] | None:
    """A composite over the resource itself needs every component's starting keys; one over a child
    element (``Observation.component``) needs that element."""
    rtype = param.resource_type
    alternatives = []
    for branch in split_union(param.expression):
        if branch == rtype:
            sets = [root_keys(f"{rtype}.{c.expression}", rtype) for c in param.components]
            if any(k is None for k in sets):
                return None
            alternatives.append(tuple(k for k in sets if k is not None))
        else:
            keys = root_keys(branch, rtype)
            if keys is None:
                return None
            alternatives.append((keys,))
    return tuple(alternatives)


def _possible(keys: Any, needs: tuple[tuple[frozenset[str], ...], ...]) -> bool:
    return any(all(not keys.isdisjoint(k) for k in alternative) for alternative in needs)


#: Meta elements the store sets itself and keeps as columns (no parameter indexes them)
_STORE_META = frozenset({"versionId", "lastUpdated"})


def index_rows(resource: dict[str, Any], part: str = "all") -> dict[str, list[Row]]:
    """All index rows of a resource, by parameter type (table). ``rid`` is added by the caller.

    ``part`` "meta" gives only the rows of parameters on ``Resource.meta`` (_tag, _profile, _security,
    _source) and "content" only the others, so that work done ahead on a resource's content (bulk load's
    worker processes) can be completed once the pipeline has settled its meta."""
    rtype = resource["resourceType"]
    out: dict[str, list[Row]] = {k: [] for k in STRATEGIES}
    if part == "meta" and _STORE_META.issuperset(resource.get("meta") or ()):
        return out  # nothing but versionId and lastUpdated: no meta parameter has a value
    keys = resource.keys()
    group = 0
    memo: dict[tuple[int, str], list[Values]] = {}
    for planned in _plan(rtype) if part == "all" else _plan_part(rtype, part == "meta"):
        param = planned.param
        if planned.strategy is None:
            if planned.needs is None or _possible(keys, planned.needs):
                group = _composite_rows(resource, param, out, group, memo)
            continue
        if planned.roots is not None and keys.isdisjoint(planned.roots):
            continue
        items = _unwrap_extension(param.evaluate(resource))
        if not items:
            continue
        code = planned.code
        rows = out[param.type]
        for values in planned.strategy(items):
            if values[0] is IDENTIFIER:
                out["token"].append((rtype, code + ":identifier", *values[1], None))
            else:
                rows.append((rtype, code, *values, None))
    return out


def _composite_rows(
    resource: dict[str, Any],
    param: SearchParam,
    out: dict[str, list[Row]],
    group: int,
    memo: dict[tuple[int, str], list[Values]],
) -> int:
    """Rows of each component, evaluated on each element the composite expression yields, tagged with
    that element's group number and named ``<code>$<component index>``. ``memo`` keeps each
    component's values per element for the other composites of the same resource (``code`` is a
    component of four of Observation's)."""
    components = component_params(param)
    if components is None:
        return group
    rtype = param.resource_type
    for item in param.evaluate(resource):
        found = []
        for comp_type, expression, evaluate in components:
            key = (id(item.value), expression)
            values = memo.get(key)
            if values is None:
                produced = STRATEGIES[comp_type](_unwrap_extension(evaluate(item)))
                memo[key] = values = [v for v in produced if v[0] is not IDENTIFIER]
            if not values:  # a composite value needs every component
                break
            found.append((comp_type, values))
        else:
            group += 1
            for i, (comp_type, values) in enumerate(found):
                name = f"{param.code}${i}"
                out[comp_type].extend((rtype, name, *v, group) for v in values)
    return group


_COMPONENTS: dict[tuple[str, str], list[tuple[str, str, Callable[[Item], list[Item]]]] | None] = {}


def component_params(param: SearchParam) -> list[tuple[str, str, Callable[[Item], list[Item]]]] | None:
    """(component parameter type, its expression, compiled relative expression) per component; None if
    unusable."""
    key = (param.resource_type, param.code)
    if key not in _COMPONENTS:
        comps: list[tuple[str, str, Callable[[Item], list[Item]]]] | None = []
        for comp in param.components:
            definition = registry().by_url.get(comp.definition_url)
            if definition is None or definition.get("type") not in STRATEGIES or comps is None:
                comps = None
                continue
            try:
                comps.append((definition["type"], comp.expression, compile_relative(comp.expression)))
            except Unsupported:
                comps = None
        _COMPONENTS[key] = comps
    return _COMPONENTS[key]
