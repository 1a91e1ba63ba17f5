"""FHIR search compiled to SQL over the index tables, the same SQL on SQLite and PostgreSQL.

A search becomes ``resource`` rows filtered by one condition per parameter (AND), each an
``rid IN (SELECT rid FROM idx_<type> WHERE ...)`` over the OR of its values. Each parameter type has one
builder (the strategies of :mod:`changbai.store.indexer`, read backwards); chains and ``_has`` nest the
same builders through ``idx_reference``.

Index rows exist only for the current version of live resources and carry the resource type, so a
positive index lookup (:class:`InIndex`) stands for a set of live resources by itself: counts, ``_has``
and chains use those rid sets directly instead of joining every candidate back to ``resource``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    Boolean,
    ColumnElement,
    CompoundSelect,
    Select,
    String,
    and_,
    bindparam,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
    union,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from changbai.errors import InvalidInput, NotSupported
from changbai.fhir.searchparams import SearchParam, compartments, registry
from changbai.fhir.spec import spec
from changbai.fhir.values import date_range, normalise_string, now_instant, number_range
from changbai.settings import get_settings
from changbai.store import schema as t
from changbai.store import ucum
from changbai.store.prepared import Prepared

if TYPE_CHECKING:
    from changbai.store.repository import Unit

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = frozenset(
    {
        "_count",
        "_offset",
        "_cursor",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_contained",
        "_containedType",
        "_format",
        "_pretty",
    }
)
R = t.resource.c


class InIndex:
    """``rid IN (rids)`` where ``rids`` selects index rows of the searched types: the resources they name
    are live and of those types, so the rid set can be used without ``resource``. ``live`` False: the
    rids may name deleted resources or resources of other types (``_has``, which selects the targets of
    references straight from the index): a set of them alone is checked against ``resource`` (see
    :func:`_matching_rids`); with any other lookup, or as ``rid IN`` on ``resource``, that one decides."""

    def __init__(self, rids: Callable[[], Select[Any] | CompoundSelect], *, live: bool = True) -> None:
        self.rids = rids
        self.live = live

    def __call__(self) -> ColumnElement[bool]:
        return R.rid.in_(self.rids())


class TokenLookup(InIndex):
    """``param=system|code`` on a token parameter, without modifier: the condition of nearly every
    conditional write (``Patient?identifier=system|value``). It is kept as data, so that
    :func:`match_ids` can answer a request made of it alone with a statement compiled once, and it is
    built into Core only when a general search needs it (building it was a third of a lookup's time)."""

    def __init__(self, types: list[str], code: str, system: str, value: str) -> None:
        self.types = tuple(types)
        self.code = code
        self.system = system
        self.value = value
        self._rids: Select[Any] | None = None
        super().__init__(self._build)

    def _build(self) -> Select[Any]:
        if self._rids is None:
            c = t.idx_token.c
            self._rids = select(c.rid).where(
                c.rtype.in_(self.types), c.param == self.code, _token_pair(c, self.system, self.value)
            )
        return self._rids


@dataclass
class Clause:
    name: str  # as given, e.g. "subject:Patient.name:exact"
    build: Callable[[], ColumnElement[bool]]


@dataclass
class SearchRequest:
    rtype: str | None
    types: list[str]
    clauses: list[Clause] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    includes: list[tuple[str, bool]] = field(default_factory=list)  # (value, iterate)
    revincludes: list[tuple[str, bool]] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str = "accurate"
    #: keyset paging for the default order (newest first): the (last_updated, rid) of the last row seen.
    cursor: tuple[int, int] | None = None
    #: extra conditions on ``resource`` rows (security scopes, compartments), ANDed in.
    restrictions: list[ColumnElement[bool]] = field(default_factory=list)
    #: extra conditions on a resource's rid alone (security's access labels), ANDed in; unlike
    #: ``restrictions`` they also apply where a search is answered from the indexes alone (counts, candidates).
    rid_filters: list[Callable[[Any], ColumnElement[bool]]] = field(default_factory=list)
    #: a hook to decide, per resource, whether the reader may see it (security).
    visible: Callable[[str, dict[str, Any]], bool] | None = None
    ignored: list[str] = field(default_factory=list)

    @classmethod
    def parse(
        cls, rtype: str | None, params: list[tuple[str, str]], *, strict: bool = True, types: list[str] | None = None
    ) -> SearchRequest:
        settings = get_settings()
        all_types = sorted(spec().resource_types)
        if rtype is None:
            type_values = [v for k, v in params if k == "_type"]
            if type_values:
                wanted = [x for v in type_values for x in v.split(",") if x]
                for w in wanted:
                    if w not in spec().resource_types:
                        raise InvalidInput(f"Unknown resource type '{w}' in _type", expression="_type")
                types = wanted
            else:
                types = types or all_types
        req = cls(rtype, [rtype] if rtype else list(types or all_types), count=settings.default_page_size)
        for name, value in params:
            if name == "_type" and rtype is None:
                req.used.append((name, value))
                continue
            try:
                req._add(name, value, settings.max_page_size)
            except InvalidInput:
                if strict:
                    raise
                req.ignored.append(name)
        return req

    def _add(self, name: str, value: str, max_page: int) -> None:
        base = name.split(":", 1)[0]
        if base in RESULT_PARAMS:
            self._result_param(base, name, value, max_page)
            self.used.append((name, value))
            return
        if base == "_has":
            self.clauses.append(Clause(name, _has_builder(self.types, name, value)))
            self.used.append((name, value))
            return
        if base == "_list":
            self.clauses.append(Clause(name, _list_builder(value)))
            self.used.append((name, value))
            return
        builder = _param_builder(self.types, name, value)
        self.clauses.append(Clause(name, builder))
        self.used.append((name, value))

    def _result_param(self, base: str, name: str, value: str, max_page: int) -> None:
        if base == "_count":
            if not value.isdigit():
                raise InvalidInput(f"_count must be a non-negative integer, not '{value}'", expression="_count")
            self.count = min(int(value), max_page)
        elif base == "_offset":
            if not value.isdigit():
                raise InvalidInput(f"_offset must be a non-negative integer, not '{value}'", expression="_offset")
            self.offset = int(value)
        elif base == "_cursor":
            updated, _, rid = value.partition(".")
            if not (updated.lstrip("-").isdigit() and rid.isdigit()):
                raise InvalidInput("Invalid paging cursor", expression="_cursor")
            self.cursor = (int(updated), int(rid))
        elif base == "_sort":
            for key in value.split(","):
                desc = key.startswith("-")
                key = key.lstrip("-")
                if key not in ("_id", "_lastUpdated") and not any(registry().get(ty, key) for ty in self.types):
                    raise InvalidInput(f"Unknown sort parameter '{key}'", expression="_sort")
                self.sort.append((key, desc))
        elif base == "_include":
            self.includes.append((value, name.endswith(":iterate") or name.endswith(":recurse")))
        elif base == "_revinclude":
            self.revincludes.append((value, name.endswith(":iterate") or name.endswith(":recurse")))
        elif base == "_summary":
            if value not in ("true", "false", "text", "data", "count"):
                raise InvalidInput(
                    f"_summary must be true, false, text, data or count, not '{value}'", expression="_summary"
                )
            self.summary = None if value == "false" else value
        elif base == "_elements":
            self.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif base == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise InvalidInput(f"_total must be none, estimate or accurate, not '{value}'", expression="_total")
            self.total = value


# ------------------------------------------------------------------------------------------- values
def split_or(value: str) -> list[str]:
    """Split on unescaped commas and unescape ``\\,`` ``\\$`` ``\\|`` ``\\\\``."""
    parts, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def split_unescaped(value: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", value)


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-."):
        return value[:2], value[2:]
    return "eq", value


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class PrefixRange(ColumnElement[bool]):
    """``column`` starts with ``prefix``, as the index range [prefix, next prefix) in code point order, ANDed
    with the LIKE: SQLite's LIKE is case-insensitive and so never uses an index by itself, and on
    PostgreSQL the byte-wise pattern operators match the ``varchar_pattern_ops`` index of any collation."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True
    _traverse_internals = [  # noqa: RUF012  # SQLAlchemy declares it so
        ("column", InternalTraversal.dp_clauseelement),
        ("low", InternalTraversal.dp_clauseelement),
        ("high", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], prefix: str) -> None:
        self.column = column
        self.low = literal(prefix, String())
        following = ord(prefix[-1]) + 1
        following = 0xE000 if 0xD800 <= following <= 0xDFFF else following  # surrogates are no characters
        self.high = literal(prefix[:-1] + chr(following), String())


@compiles(PrefixRange)
def _prefix_range(element: PrefixRange, compiler: Any, **kw: Any) -> str:
    both = and_(element.column >= element.low, element.column < element.high)
    return f"({compiler.process(both, **kw)})"


@compiles(PrefixRange, "postgresql")
def _prefix_range_pg(element: PrefixRange, compiler: Any, **kw: Any) -> str:
    # PostgreSQL derives this very range (byte-wise, ``~>=~`` and ``~<~``, which the ``varchar_pattern_ops``
    # index of any collation serves) from the LIKE itself; said again, it was counted twice in the row
    # estimate (the square of the prefix's share: 2 rows for a family name that 1,166 residents have at
    # 1M resources), and the planner then joined such a lookup by nested loop.
    return "true"


# --------------------------------------------------------------------------------- parameter builders
def _param_builder(types: list[str], name: str, value: str) -> Callable[[], ColumnElement[bool]]:
    """Condition on ``resource`` for ``name=value`` (modifiers and chains included)."""
    chain = None
    if "." in name:
        name, chain = name.split(".", 1)
    code, _, modifier = name.partition(":")
    if code == "_id":
        return _id_builder(modifier, value)
    if code == "_lastUpdated":
        return _last_updated_builder(modifier, value)
    params = [p for ty in types if (p := registry().get(ty, code)) is not None]
    if not params:
        raise InvalidInput(
            f"Unknown search parameter '{code}' for {', '.join(types[:3])}" + ("..." if len(types) > 3 else ""),
            expression=name,
            code="not-supported",
        )
    param = params[0]
    type_names = [p.resource_type for p in params]
    if chain is not None:
        if param.type != "reference":
            raise InvalidInput(f"'{code}' is not a reference parameter and cannot be chained", expression=name)
        return _chain_builder(type_names, param, modifier, chain, value)
    if modifier == "missing":
        if value not in ("true", "false"):
            raise InvalidInput(f":missing takes true or false, not '{value}'", expression=name)
        table = t.INDEX_TABLES.get(param.type)
        if table is None:
            raise NotSupported(f":missing is not supported on {param.type} parameter '{code}'", expression=name)
        has = R.rid.in_(select(table.c.rid).where(table.c.rtype.in_(type_names), table.c.param == code))
        return lambda: not_(has) if value == "true" else has
    kind = param.type
    if kind == "composite":
        return _composite_builder(type_names, param, modifier, value, name)
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise NotSupported(f"Search parameter '{code}' of type {kind} is not supported", expression=name)
    values = split_or(value)
    if kind == "token" and modifier == "" and len(values) == 1:
        system, tok = _system_code(values[0])
        if system and tok:
            return TokenLookup(type_names, code, system, tok)
    if modifier in ("not", "not-in") and kind == "token":
        conds = [builder(type_names, code, "" if modifier == "not" else "in", v, name) for v in values]
        inner = or_(*conds)
        table = t.INDEX_TABLES[kind]
        sub = select(table.c.rid).where(table.c.rtype.in_(type_names), table.c.param == code, inner)
        return lambda: not_(R.rid.in_(sub))
    conds = [builder(type_names, code, modifier, v, name) for v in values]
    table = t.INDEX_TABLES[kind]
    if kind == "reference" and modifier == "identifier":
        table = t.idx_token
        code = code + ":identifier"
    sub = select(table.c.rid).where(table.c.rtype.in_(type_names), table.c.param == code, or_(*conds))
    if modifier == "ne":  # not a FHIR modifier, kept out
        raise InvalidInput(f"Unknown modifier ':{modifier}'", expression=name)
    return InIndex(lambda: sub)


def _id_builder(modifier: str, value: str) -> Callable[[], ColumnElement[bool]]:
    ids = [unescape(v) for v in split_or(value)]
    if modifier == "not":
        return lambda: R.id.not_in(ids)
    if modifier == "missing":
        return lambda: false() if value == "true" else true()
    if modifier:
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on _id", expression="_id:" + modifier)
    return lambda: R.id.in_(ids)


def _last_updated_builder(modifier: str, value: str) -> Callable[[], ColumnElement[bool]]:
    if modifier:
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on _lastUpdated", expression="_lastUpdated")
    conds = [_date_condition(R.last_updated, R.last_updated, v, "_lastUpdated") for v in split_or(value)]
    return lambda: or_(*conds)


def _string_cond(
    types: list[str], code: str, modifier: str, value: str, name: str, table: Any = None
) -> ColumnElement[bool]:
    c = (table if table is not None else t.idx_string).c
    raw = unescape(value)
    if modifier == "exact":
        return c.exact == raw
    norm = normalise_string(raw)
    if modifier == "contains":
        return c.value.like(f"%{_like_escape(norm)}%", escape="\\")
    if modifier in ("", "text"):
        like = c.value.like(f"{_like_escape(norm)}%", escape="\\")
        return and_(like, PrefixRange(c.value, norm)) if norm and norm[-1] != "\U0010ffff" else like
    raise InvalidInput(f"Modifier ':{modifier}' is not allowed on string parameter '{code}'", expression=name)


def _token_cond(
    types: list[str], code: str, modifier: str, value: str, name: str, table: Any = None
) -> ColumnElement[bool]:
    c = (table if table is not None else t.idx_token).c
    if modifier == "text":
        return c.text.like(f"{_like_escape(normalise_string(unescape(value)))}%", escape="\\")
    if modifier == "of-type":
        parts = split_unescaped(value, "|")
        if len(parts) != 3:
            raise InvalidInput(":of-type takes system|code|value", expression=name)
        return and_(c.system == f"of-type:{unescape(parts[0])}|{unescape(parts[1])}", c.code == unescape(parts[2]))
    if modifier in ("below", "above", "in", "not-in"):
        codings = _expand_token(modifier, unescape(value), name)
        if not codings:
            return false()
        by_system: dict[str | None, list[str]] = {}
        for system, c_code in codings:
            by_system.setdefault(system, []).append(c_code)
        conds = [
            and_(c.system == s_ if s_ is not None else true(), c.code.in_(codes)) for s_, codes in by_system.items()
        ]
        return or_(*conds)
    if modifier not in ("", "not"):
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on token parameter '{code}'", expression=name)
    system, tok = _system_code(value)
    return _token_pair(c, system, tok)


def _system_code(value: str) -> tuple[str | None, str]:
    """A plain token value as (system, code): ``code`` is (None, code), any system; ``|code`` is
    ("", code), no system; ``system|`` is (system, ""), any code of the system."""
    parts = split_unescaped(value, "|", 1)
    if len(parts) == 1:
        return None, unescape(parts[0])
    return unescape(parts[0]), unescape(parts[1])


def _token_pair(c: Any, system: str | None, tok: str) -> ColumnElement[bool]:
    if system is None:
        return c.code == tok
    if system == "":
        return and_(c.system.is_(None), c.code == tok)
    if tok == "":
        return c.system == system
    return and_(c.system == system, c.code == tok)


#: Set by the terminology module: (modifier, value, parameter name) -> the (system, code) pairs that
#: ``:below``/``:above`` a code or ``:in``/``:not-in`` a value set stand for. None: not available.
TokenExpander = Callable[[str, str], "list[tuple[str | None, str]] | None"]
#: the expander of the repository whose search is being compiled (set by Unit.search)
current_expander: ContextVar[TokenExpander | None] = ContextVar("changbai_token_expander", default=None)


def _expand_token(modifier: str, value: str, name: str) -> list[tuple[str | None, str]]:
    expander = current_expander.get()
    found = expander(modifier, value) if expander is not None else None
    if found is None:
        raise NotSupported(
            f"Modifier ':{modifier}' is not available for '{value}' (no such code system or value set "
            "in the terminology service)",
            expression=name,
        )
    return found


def _reference_cond(
    types: list[str], code: str, modifier: str, value: str, name: str, table: Any = None
) -> ColumnElement[bool]:
    c = (table if table is not None else t.idx_reference).c
    raw = unescape(value)
    if modifier == "identifier":
        tc = t.idx_token.c
        parts = split_unescaped(value, "|", 1)
        if len(parts) == 1:
            return tc.code == raw
        return and_(tc.system == unescape(parts[0]), tc.code == unescape(parts[1]))
    target_types = _reference_targets(types, code)
    if modifier and modifier not in target_types:
        if modifier in spec().resource_types:
            raise InvalidInput(f"'{code}' cannot refer to {modifier}", expression=name)
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on reference parameter '{code}'", expression=name)
    if "://" in raw or raw.startswith("urn:"):
        base = raw.partition("|")[0]  # a canonical may carry |version
        m = re.search(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$", base)
        conds = [c.url == base]
        if m and m.group(1) in spec().resource_types:
            conds.append(and_(c.target_type == m.group(1), c.target_id == m.group(2)))
        return or_(*conds)
    if "/" in raw:
        ty, _, rest = raw.partition("/")
        ident = rest.split("/_history/")[0]
        if modifier and ty != modifier:
            return false()
        return and_(c.target_type == ty, c.target_id == ident)
    if modifier:
        return and_(c.target_type == modifier, c.target_id == raw)
    return c.target_id == raw


def _reference_targets(types: list[str], code: str) -> list[str]:
    out: set[str] = set()
    for ty in types:
        p = registry().get(ty, code)
        if p is not None:
            out.update(p.targets)
    return sorted(out)


def _date_condition(low: Any, high: Any, value: str, name: str) -> ColumnElement[bool]:
    prefix, text = _prefix(value)
    try:
        pl, ph = date_range(text)
    except InvalidInput:
        raise InvalidInput(f"'{value}' is not a valid date for '{name}'", expression=name) from None
    eq = and_(low >= pl, high <= ph)
    if prefix == "eq":
        # ``low <= ph`` follows from low <= high <= ph; said outright, it bounds the scan of the (low) index
        # to the value's range instead of everything after its start
        return and_(low >= pl, low <= ph, high <= ph)
    if prefix == "ne":
        return not_(eq)
    if prefix == "gt":
        return high > ph
    if prefix == "lt":
        return low < pl
    if prefix == "ge":  # some of the target is at or after the start of the value
        return high >= pl
    if prefix == "le":  # some of the target is at or before the end of the value
        return low <= ph
    if prefix == "sa":
        return low > ph
    if prefix == "eb":
        return high < pl
    # ap: within 10% of the distance between the value and now
    _, now = now_instant()
    slack = int(abs(now - pl) * 0.1)
    return and_(low <= ph + slack, high >= pl - slack)


def _date_cond(
    types: list[str], code: str, modifier: str, value: str, name: str, table: Any = None
) -> ColumnElement[bool]:
    if modifier:
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on date parameter '{code}'", expression=name)
    c = (table if table is not None else t.idx_date).c
    return _date_condition(c.low, c.high, value, name)


def _number_condition(
    col: Any, lowcol: Any, highcol: Any, prefix: str, text: str, name: str, exact_precision: bool = True
) -> ColumnElement[bool]:
    try:
        value, pl, ph = number_range(text)
    except InvalidInput:
        raise InvalidInput(f"'{text}' is not a valid number for '{name}'", expression=name) from None
    v, lo, hi = float(value), float(pl), float(ph)
    if prefix == "eq":
        return and_(col >= lo, col < hi)
    if prefix == "ne":
        return or_(col < lo, col >= hi)
    if prefix in ("gt", "sa"):
        return col > v
    if prefix in ("lt", "eb"):
        return col < v
    if prefix == "ge":
        return col >= v
    if prefix == "le":
        return col <= v
    slack = abs(v) * 0.1
    return and_(col >= v - slack, col <= v + slack)


def _number_cond(
    types: list[str], code: str, modifier: str, value: str, name: str, table: Any = None
) -> ColumnElement[bool]:
    if modifier:
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on number parameter '{code}'", expression=name)
    c = (table if table is not None else t.idx_number).c
    prefix, text = _prefix(value)
    return _number_condition(c.value, c.low, c.high, prefix, text, name)


def _quantity_cond(
    types: list[str], code: str, modifier: str, value: str, name: str, table: Any = None
) -> ColumnElement[bool]:
    if modifier:
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on quantity parameter '{code}'", expression=name)
    c = (table if table is not None else t.idx_quantity).c
    parts = split_unescaped(value, "|")
    if len(parts) not in (1, 3):
        raise InvalidInput(f"A quantity is number, or number|system|code, not '{value}'", expression=name)
    prefix, text = _prefix(parts[0])
    system, unit = (unescape(parts[1]), unescape(parts[2])) if len(parts) == 3 else ("", "")
    if system == ucum.SYSTEM and unit:
        try:
            num = Decimal(text)
        except Exception:
            raise InvalidInput(f"'{text}' is not a valid number for '{name}'", expression=name) from None
        canon = ucum.canonical(float(num), unit)
        if canon is not None:
            factor = canon[0] / float(num) if float(num) else (ucum.canonical(1.0, unit) or (1.0, ""))[0]
            scaled = _scale_text(text, factor)
            return and_(
                c.canonical_code == canon[1], _number_condition(c.canonical_value, None, None, prefix, scaled, name)
            )
    cond = _number_condition(c.value, c.low, c.high, prefix, text, name)
    if system:
        cond = and_(cond, c.system == system)
    if unit:
        cond = and_(cond, or_(c.code == unit, and_(c.code.is_(None), c.unit == unit)) if not system else c.code == unit)
    return cond


def _scale_text(text: str, factor: float) -> str:
    """Scale a decimal string keeping its significant precision (for UCUM conversion)."""
    value = Decimal(text) * Decimal(repr(factor))
    exponent = Decimal(text).as_tuple().exponent
    assert isinstance(exponent, int)
    shift = round(math.log10(factor)) if factor > 0 else 0
    quant = Decimal(1).scaleb(exponent + shift)
    return str(value.quantize(quant)) if abs(exponent + shift) < 20 else str(value)


def _uri_cond(
    types: list[str], code: str, modifier: str, value: str, name: str, table: Any = None
) -> ColumnElement[bool]:
    c = (table if table is not None else t.idx_uri).c
    raw = unescape(value)
    if modifier == "below":
        return or_(c.uri == raw, c.uri.like(f"{_like_escape(raw.rstrip('/'))}/%", escape="\\"))
    if modifier == "above":
        prefixes = []
        cur = raw
        while "/" in cur and not cur.endswith(":/"):
            prefixes.append(cur)
            cur = cur.rsplit("/", 1)[0]
        return c.uri.in_(prefixes or [raw])
    if modifier:
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on uri parameter '{code}'", expression=name)
    return c.uri == raw


_BUILDERS: dict[str, Callable[..., ColumnElement[bool]]] = {
    "string": _string_cond,
    "token": _token_cond,
    "reference": _reference_cond,
    "date": _date_cond,
    "number": _number_cond,
    "quantity": _quantity_cond,
    "uri": _uri_cond,
}


def _composite_builder(
    types: list[str], param: SearchParam, modifier: str, value: str, name: str
) -> Callable[[], ColumnElement[bool]]:
    """Composite ``a$b``: every component must match on the same element (rows of one group)."""
    from changbai.store.indexer import component_params

    if modifier:
        raise InvalidInput(f"Modifier ':{modifier}' is not allowed on composite parameter", expression=name)
    comps = component_params(param)
    if comps is None:
        raise NotSupported(f"Composite parameter '{param.code}' is not supported", expression=name)
    alternatives = []
    for alternative in split_or(value):
        pieces = split_unescaped(alternative, "$")
        if len(pieces) != len(comps):
            raise InvalidInput(f"'{param.code}' takes {len(comps)} values separated by $", expression=name)
        tables = [t.INDEX_TABLES[comp_type].alias(f"c{i}") for i, (comp_type, _, _) in enumerate(comps)]
        conds: list[ColumnElement[bool]] = []
        for i, ((comp_type, _, _), piece, table) in enumerate(zip(comps, pieces, tables, strict=True)):
            conds.append(table.c.rtype.in_(types))
            conds.append(table.c.param == f"{param.code}${i}")
            conds.append(_BUILDERS[comp_type](types, param.code, "", piece, name, table))
            if i:
                conds += [table.c.rid == tables[0].c.rid, table.c.grp == tables[0].c.grp]
        alternatives.append(select(tables[0].c.rid).where(*conds))
    if len(alternatives) == 1:
        return InIndex(lambda: alternatives[0])
    return InIndex(lambda: union(*alternatives))


def _chain_builder(
    types: list[str], param: SearchParam, modifier: str, chain: str, value: str
) -> Callable[[], ColumnElement[bool]]:
    targets = [modifier] if modifier else list(param.targets)
    next_name = chain
    next_code = next_name.split(".", 1)[0].split(":", 1)[0]
    targets = [ty for ty in targets if next_code in ("_id", "_lastUpdated") or registry().get(ty, next_code)]
    if not targets:
        raise InvalidInput(
            f"No target of '{param.code}' has a search parameter '{next_code}'", expression=f"{param.code}.{chain}"
        )
    inner = _param_builder(targets, next_name, value)

    def rids() -> Select[Any] | CompoundSelect:
        if isinstance(inner, InIndex):  # its rids are live resources of the target types already
            found: Select[Any] | CompoundSelect = inner.rids()
        else:
            found = select(R.rid).where(R.rtype.in_(targets), R.deleted == false(), inner()).correlate(None)
        return referring(types, param.code, found)

    return InIndex(rids)


def referring(types: list[str], code: str, targets: Select[Any] | CompoundSelect) -> Select[Any] | CompoundSelect:
    """The rids of resources of ``types`` whose reference parameter ``code`` points at one of the live
    resources ``targets`` selects (by rid): through the references' target rids, and for references
    stored without one (see :mod:`changbai.store.targets`) through the targets' type and id."""
    c = t.idx_reference.c
    known = select(c.rid).where(c.rtype.in_(types), c.param == code, c.target_rid.in_(targets))
    if not _unresolved(types, code):
        return known
    target = t.resource.alias("ref_target")
    named = select(target.c.rtype, target.c.id).where(target.c.rid.in_(targets)).correlate(None)
    return union(
        known,
        select(c.rid).where(
            c.rtype.in_(types),
            c.param == code,
            c.target_rid.is_(None),
            tuple_(c.target_type, c.target_id).in_(named),
        ),
    )


def referenced(
    types: list[str], rtype: str, code: str, referrers: Select[Any] | CompoundSelect
) -> Select[Any] | CompoundSelect:
    """The rids of the resources that the reference parameter ``code`` of the resources ``referrers``
    selects (of type ``rtype``) points at: each reference's target rid, or for one stored without it, the
    rid of its target of ``types`` found by type and id. They may be deleted, or of other types than
    ``types`` (``InIndex.live``)."""
    c = t.idx_reference.c
    refs = (c.rtype == rtype, c.param == code, c.rid.in_(referrers))
    # from the index alone, (rtype, param, target_rid, rid): no target type here (see InIndex.live)
    known = select(c.target_rid).where(*refs, c.target_rid.is_not(None))
    if not _unresolved([rtype], code):
        return known
    target = t.resource.alias("ref_target")
    return union_all(
        known,
        select(target.c.rid)
        .join_from(t.idx_reference, target, and_(target.c.rtype == c.target_type, target.c.id == c.target_id))
        .where(*refs, c.target_rid.is_(None), target.c.rtype.in_(types)),
    )


#: While a search runs: its connection, and for (types, parameter) whether any of their references is
#: stored without a target rid (see :func:`_unresolved`).
_running: ContextVar[tuple[Any, dict[tuple[tuple[str, ...], str], bool]] | None] = ContextVar(
    "changbai_search_running", default=None
)


def _unresolved(types: list[str], code: str) -> bool:
    """Whether a reference of ``types`` by ``code`` may be stored without its target's rid (a reference to
    a resource that does not exist, or one whose target another transaction was creating meanwhile). Where
    none is, chains and _has follow target rids alone: the probe of ``resource`` for such rows would be a
    union, which PostgreSQL reads whole instead of joining into it (2 rows kept of 3,718 target rids read
    for a rare family name). One index probe, once per search; True when no search is running."""
    running = _running.get()
    if running is None:
        return True
    conn, known = running
    key = (tuple(types), code)
    if key not in known:
        c = t.idx_reference.c
        q = select(c.rid).where(c.rtype.in_(types), c.param == code, c.target_rid.is_(None)).limit(1)
        known[key] = conn.execute(q).first() is not None
    return known[key]


@contextmanager
def _search_running(unit: Unit) -> Iterator[None]:
    token = _running.set((unit.conn, {}))
    try:
        yield
    finally:
        _running.reset(token)


def _has_builder(types: list[str], name: str, value: str) -> InIndex:
    """``_has:Observation:patient:code=x``: referenced by an Observation (via patient) with code x."""
    parts = name.split(":", 3)
    if len(parts) < 4 or not parts[1] or not parts[2] or not parts[3]:
        raise InvalidInput("_has takes _has:Type:referenceParam:param=value", expression=name)
    _, other, ref_code, rest = parts
    if other not in spec().resource_types:
        raise InvalidInput(f"Unknown resource type '{other}' in _has", expression=name)
    ref = registry().get(other, ref_code)
    if ref is None or ref.type != "reference":
        raise InvalidInput(f"'{ref_code}' is not a reference parameter of {other}", expression=name)
    nested = rest.startswith("_has:")
    inner = _has_builder([other], rest, value) if nested else _param_builder([other], rest, value)

    def referrers() -> Select[Any] | CompoundSelect:
        # an index lookup's rids as they are: only live resources of the other type have reference rows,
        # so a nested _has set's deleted or other resources find none
        if isinstance(inner, InIndex):
            return inner.rids()
        return select(R.rid).where(R.rtype == other, R.deleted == false(), inner()).correlate(None)

    return HasLookup(types, other, ref_code, referrers)


class HasLookup(InIndex):
    """A ``_has`` set: the targets of the references ``code`` of the resources of type ``other`` that
    ``referrers`` selects, as rids (not type and id pairs), so that counts can intersect it with the other
    conditions. Kept apart so that :func:`_matching_rids` can join those references to another set instead
    of testing membership in this one (see there)."""

    def __init__(
        self, types: list[str], other: str, code: str, referrers: Callable[[], Select[Any] | CompoundSelect]
    ) -> None:
        self.other = other
        self.code = code
        self.referrers = referrers
        self._few: bool | None = None
        super().__init__(lambda: referenced(types, other, code, referrers()), live=False)

    def few_referrers(self) -> bool:
        """Whether the references all carry target rids and at most ``HAS_JOIN_LIMIT`` resources refer:
        then reading all the referrers once costs little whatever the other conditions select (a common
        code's 100,000 Observations would not). One bounded count, once per search; False when no
        search is running, and on SQLite, which plans ``rid IN`` a _has set well (the join took 3-7 ms to
        13 ms for the commonest family name at 100k)."""
        if self._few is None:
            running = _running.get()
            if running is None or running[0].dialect.name != "postgresql" or _unresolved([self.other], self.code):
                self._few = False
            else:
                few = self.referrers().limit(HAS_JOIN_LIMIT + 1).subquery()
                found = running[0].execute(select(func.count()).select_from(few)).scalar_one()
                self._few = found <= HAS_JOIN_LIMIT
        return self._few


#: Up to this many referrers, a _has set is joined to the other conditions (see :func:`_matching_rids`).
HAS_JOIN_LIMIT = 10000


def _list_builder(value: str) -> Callable[[], ColumnElement[bool]]:
    c = t.idx_reference.c
    ids = split_or(value)

    def build() -> ColumnElement[bool]:
        lists = select(R.rid).where(R.rtype == "List", R.id.in_(ids), R.deleted == false()).correlate(None)
        refs = select(c.target_type, c.target_id).where(c.rtype == "List", c.param == "item", c.rid.in_(lists))
        return tuple_(R.rtype, R.id).in_(refs)

    return build


# ------------------------------------------------------------------------------------------ execution
@dataclass
class Match:
    rid: int
    rtype: str
    id: str
    version: int
    last_updated: int
    resource: dict[str, Any]
    mode: str = "match"  # match | include | outcome


@dataclass
class SearchResult:
    request: SearchRequest
    matches: list[Match]
    included: list[Match]
    total: int | None
    has_more: bool
    next_cursor: str | None = None  # for the next link when paging by keyset


def _where(request: SearchRequest) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [R.deleted == false()]
    conds.append(R.rtype == request.rtype if request.rtype else R.rtype.in_(request.types))
    conds.extend(c.build() for c in request.clauses)
    conds.extend(request.restrictions)
    conds.extend(f(R.rid) for f in request.rid_filters)
    return conds


#: The column a parameter type sorts by; dates sort by the start of their range ascending, the end descending.
_SORT_COLUMN = {
    "date": "range",
    "string": "value",
    "token": "code",
    "number": "value",
    "quantity": "value",
    "reference": "target_id",
    "uri": "uri",
}


def _order(request: SearchRequest) -> list[Any]:
    order: list[Any] = []
    for key, desc in request.sort:
        if key == "_id":
            expr: Any = R.id
        elif key == "_lastUpdated":
            expr = R.last_updated
        else:
            param = next((p for ty in request.types if (p := registry().get(ty, key))), None)
            if param is None or param.type not in t.INDEX_TABLES:
                raise InvalidInput(f"Cannot sort by '{key}'", expression="_sort")
            table = t.INDEX_TABLES[param.type]
            column = _SORT_COLUMN[param.type]
            col = table.c[("high" if desc else "low") if column == "range" else column]
            agg = func.max(col) if desc else func.min(col)
            expr = select(agg).where(table.c.rid == R.rid, table.c.param == key).scalar_subquery()
        order.append(expr.desc() if desc else expr.asc())
    order.append(R.last_updated.desc() if not request.sort else R.rid.asc())
    order.append(R.rid.desc() if not request.sort else R.rid.asc())
    return order


def match_ids(unit: Unit, request: SearchRequest, limit: int | None) -> list[tuple[str, int]]:
    with _search_running(unit):
        return _match_ids(unit, request, limit)


def _match_ids(unit: Unit, request: SearchRequest, limit: int | None) -> list[tuple[str, int]]:
    """The (id, version) of the current, live resources matching ``request``'s conditions (conditional
    writes: ``Unit.find``, conditional delete), at most ``limit``."""
    lookup = _token_only(request)
    if lookup is not None and limit in _TOKEN_MATCHES:
        params = {"rtype": request.rtype, "param": lookup.code, "system": lookup.system, "code": lookup.value}
        return [(id, version) for id, version in _TOKEN_MATCHES[limit].all(unit.conn, params)]
    q = select(R.id, R.version).where(*_where(request))
    if limit is not None:
        q = q.limit(limit)
    return [(row.id, row.version) for row in unit.conn.execute(q)]


def _token_only(request: SearchRequest) -> TokenLookup | None:
    """The request's one condition when it is a :class:`TokenLookup` on the one searched type and nothing
    else narrows the rows (no restrictions or rid filters of search steps): then :func:`_where` is exactly
    the statement of ``_TOKEN_MATCHES``. Whatever the search steps rewrote (security turns protected
    identifiers into blind-index tokens) is already in the request."""
    if request.rtype is None or len(request.clauses) != 1 or request.restrictions or request.rid_filters:
        return None
    lookup = request.clauses[0].build
    if isinstance(lookup, TokenLookup) and lookup.types == (request.rtype,):
        return lookup
    return None


def _token_matches(limit: int | None) -> Prepared:
    c = t.idx_token.c
    rids = select(c.rid).where(
        c.rtype == bindparam("rtype"),
        c.param == bindparam("param"),
        c.system == bindparam("system"),
        c.code == bindparam("code"),
    )
    q = select(R.id, R.version).where(R.deleted == false(), R.rtype == bindparam("rtype"), R.rid.in_(rids))
    return Prepared(q if limit is None else q.limit(limit))


#: what :func:`_where` makes of a lone TokenLookup, compiled once (a tenth of the time of building and
#: running it through Core), for the limits conditional writes (2) and conditional deletes (none) ask
_TOKEN_MATCHES = {2: _token_matches(2), None: _token_matches(None)}


def _fetch(unit: Unit, q: Select[Any]) -> list[Match]:
    v = t.resource_version.c
    sub = q.subquery()
    joined = select(sub.c.rid, sub.c.rtype, sub.c.id, sub.c.version, sub.c.last_updated, v.content).join_from(
        sub, t.resource_version, and_(v.rid == sub.c.rid, v.version == sub.c.version)
    )
    return [
        Match(r.rid, r.rtype, r.id, r.version, r.last_updated, orjson.loads(r.content))
        for r in unit.conn.execute(joined)
    ]


def execute(unit: Unit, request: SearchRequest) -> SearchResult:
    with _search_running(unit):
        return _execute(unit, request)


def _execute(unit: Unit, request: SearchRequest) -> SearchResult:
    where = _where(request)
    if request.summary == "count" or request.count == 0:
        return SearchResult(request, [], [], _count(unit, request, where), False)
    keyset = not request.sort  # default order: page by keyset, so inserts between pages shift nothing
    page_where = list(where)
    total: int | None = None
    lookups = _lookups(request)
    if lookups is not None and request.total != "none":
        # One query over the indexes gives the total and, up to RID_SET_LIMIT matches, the page's candidates,
        # instead of a page query and a count that both intersect the same sets. Beyond, the total still
        # comes with the first rids (counted over all of them before the limit), not from a count of its
        # own: the same sets read again (3,718 Conditions :below a block at 1M resources, 4 ms).
        matching = _matching_rids(lookups, request).subquery()
        candidates = select(matching.c[0], func.count().over()).limit(RID_SET_LIMIT + 1)
        found = unit.conn.execute(candidates).all()
        total = int(found[0][1]) if found else 0
        if len(found) <= RID_SET_LIMIT:
            page_where = [*where[:2], R.rid.in_([row[0] for row in found])]  # deleted and type, then the matches
    if keyset and request.cursor is not None:
        updated, rid = request.cursor
        page_where.append(or_(R.last_updated < updated, and_(R.last_updated == updated, R.rid < rid)))
    q = (
        select(R.rid, R.rtype, R.id, R.version, R.last_updated)
        .where(*page_where)
        .order_by(*_order(request))
        .limit(request.count + 1)
        .offset(request.offset)
    )
    ordered = unit.conn.execute(q).all()
    has_more = len(ordered) > request.count
    ordered = ordered[: request.count]
    if total is None and request.total != "none":
        # The last page of a search from its start says how many there are; only longer results are counted.
        last_page = not has_more and request.cursor is None and (ordered or not request.offset)
        total = request.offset + len(ordered) if last_page else _count(unit, request, where)
    next_cursor = f"{ordered[-1].last_updated}.{ordered[-1].rid}" if keyset and has_more and ordered else None
    rids = [r.rid for r in ordered]
    matches = _load(unit, rids)
    if request.visible is not None:
        matches = [m for m in matches if request.visible(m.rtype, m.resource)]
    for m in matches:
        unit.pipeline.run_read(unit.conn, unit.ctx, m.rtype, m.resource)
    included = _includes(unit, request, matches)
    return SearchResult(request, matches, included, total, has_more, next_cursor)


def _count(unit: Unit, request: SearchRequest, where: list[ColumnElement[bool]]) -> int:
    """How many resources match. When every condition is an index lookup, the rids are counted from the
    indexes alone, the first set filtered by the others (semi-joins, so that the planner can still probe a
    large set by rid rather than read it whole), instead of probing ``resource`` once per match."""
    lookups = _lookups(request)
    if lookups is not None:
        matching = _matching_rids(lookups, request).subquery()
        return int(unit.conn.execute(select(func.count()).select_from(matching)).scalar_one())
    return int(unit.conn.execute(select(func.count()).select_from(t.resource).where(*where)).scalar_one())


#: Up to this many matches, a search whose conditions are all index lookups fetches the matching rids first.
RID_SET_LIMIT = 1000


def _lookups(request: SearchRequest) -> list[InIndex] | None:
    """The conditions as index lookups, when every one of them is (and nothing else restricts the rows)."""
    lookups = [c.build for c in request.clauses if isinstance(c.build, InIndex)]
    if lookups and len(lookups) == len(request.clauses) and not request.restrictions:
        return lookups
    return None


def _matching_rids(lookups: list[InIndex], request: SearchRequest) -> Select[Any]:
    """The rids that every lookup finds and the rid filters let through: the first set filtered by the
    others (semi-joins, so that the planner can still probe a large set by rid rather than read it whole)."""
    # a set straight from one index first: the planner can join it to the others' indexes, which it does
    # not do into the union that a _has set is (it read all of a _has set to keep 2 rows of 3,718)
    lookups = sorted(lookups, key=lambda lookup: not lookup.live)
    first = lookups[0].rids().subquery()
    rid = first.c[0]
    q = select(rid).select_from(first)
    others = []
    joined = not lookups[0].live
    for lookup in lookups[1:]:
        if not joined and isinstance(lookup, HasLookup) and lookup.few_referrers():
            # One _has set with few referrers, as a join of the first set's rids to the references that
            # point at them, the referrers read once as a set of their own (OFFSET 0 keeps the planner
            # from probing their index per reference). As ``rid IN`` a _has set, PostgreSQL probed that
            # index once per reference of each candidate: it estimates 610 residents of the commonest
            # family name at 1M resources, who are 3,128 (4,723 probes, 30 ms; 14 ms so). DISTINCT
            # folds the references again.
            ref = t.idx_reference.alias("has_ref")
            on = and_(ref.c.target_rid == rid, ref.c.rtype == lookup.other, ref.c.param == lookup.code)
            q = q.join(ref, on)
            others.append(ref.c.rid.in_(lookup.referrers().offset(0)))
            joined = True
        else:
            others.append(rid.in_(lookup.rids()))
    if not any(lookup.live for lookup in lookups):  # every set may name deleted or other resources
        live = select(R.rid).where(R.rtype.in_(request.types), R.deleted == false()).correlate(None)
        others.append(rid.in_(live))
    # (a reference whose target has no resource row gives a NULL rid in a _has set)
    return q.where(rid.is_not(None), *others, *(f(rid) for f in request.rid_filters)).distinct()


def _load(unit: Unit, rids: list[int]) -> list[Match]:
    if not rids:
        return []
    v = t.resource_version.c
    rows = unit.conn.execute(
        select(R.rid, R.rtype, R.id, R.version, R.last_updated, v.content)
        .join_from(t.resource, t.resource_version, and_(v.rid == R.rid, v.version == R.version))
        .where(R.rid.in_(rids))
    ).all()
    got = {r.rid: Match(r.rid, r.rtype, r.id, r.version, r.last_updated, orjson.loads(r.content)) for r in rows}
    return [got[r] for r in rids]


def _includes(unit: Unit, request: SearchRequest, matches: list[Match]) -> list[Match]:
    if not matches or not (request.includes or request.revincludes):
        return []
    seen = {(m.rtype, m.id) for m in matches}
    included: list[Match] = []
    frontier = matches
    rounds = 0
    c = t.idx_reference.c
    while frontier and rounds < 4:
        new: list[Match] = []
        for value, iterate in request.includes:
            if rounds and not iterate:
                continue
            parts = value.split(":")
            if len(parts) < 2:
                raise InvalidInput(f"_include takes Type:param[:TargetType], not '{value}'", expression="_include")
            src, code = parts[0], parts[1]
            target = parts[2] if len(parts) > 2 else None
            srcs = [m for m in frontier if m.rtype == src or src == "*"]
            if not srcs:
                continue
            pairs = select(c.target_type, c.target_id).where(
                c.rid.in_([m.rid for m in srcs]),
                true() if code == "*" else c.param == code,
                c.target_id.is_not(None),
            )
            if target:
                pairs = pairs.where(c.target_type == target)
            rows = select(R.rid, R.rtype, R.id, R.version, R.last_updated).where(
                R.deleted == false(), tuple_(R.rtype, R.id).in_(pairs)
            )
            new.extend(_fetch(unit, rows))
        for value, iterate in request.revincludes:
            if rounds and not iterate:
                continue
            parts = value.split(":")
            if len(parts) < 2:
                raise InvalidInput(
                    f"_revinclude takes Type:param[:TargetType], not '{value}'", expression="_revinclude"
                )
            src, code = parts[0], parts[1]
            refs = select(c.rid).where(
                true() if src == "*" else c.rtype == src,
                true() if code == "*" else c.param == code,
                tuple_(c.target_type, c.target_id).in_([(m.rtype, m.id) for m in frontier]),
            )
            rows = select(R.rid, R.rtype, R.id, R.version, R.last_updated).where(R.deleted == false(), R.rid.in_(refs))
            new.extend(_fetch(unit, rows))
        fresh = []
        for m in new:
            if (m.rtype, m.id) in seen:
                continue
            if request.visible is not None and not request.visible(m.rtype, m.resource):
                continue
            seen.add((m.rtype, m.id))
            m.mode = "include"
            unit.pipeline.run_read(unit.conn, unit.ctx, m.rtype, m.resource)
            fresh.append(m)
        included.extend(fresh)
        frontier = fresh
        rounds += 1
        if not any(it for _, it in request.includes + request.revincludes):
            break
    return included


def compartment_condition(compartment: str, id: str, types: list[str]) -> ColumnElement[bool]:
    """Resources in ``compartment/id`` (e.g. Patient/123): those linked by the CompartmentDefinition's
    parameters, plus the compartment resource itself."""
    definition = compartments().get(compartment)
    if definition is None:
        raise InvalidInput(f"There is no {compartment} compartment")
    c = t.idx_reference.c
    pairs = [(ty, p) for ty in types for p in definition.get(ty, [])]
    conds: list[ColumnElement[bool]] = []
    if pairs:
        refs = select(c.rid).where(c.target_type == compartment, c.target_id == id, tuple_(c.rtype, c.param).in_(pairs))
        conds.append(R.rid.in_(refs))
    if compartment in types:
        conds.append(and_(R.rtype == compartment, R.id == id))
    return or_(*conds) if conds else false()


def summarise(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """Apply _summary / _elements to one resource, marking it SUBSETTED as the spec asks."""
    if not summary and not elements:
        return resource
    rtype = resource["resourceType"]
    keep_base = {"resourceType", "id", "meta"}
    if summary == "text":
        out = {k: v for k, v in resource.items() if k in keep_base or k == "text"}
        node = spec().node(rtype)
        for name in node.required:
            for key in node.choices.get(name, [name]):
                if key in resource:
                    out[key] = resource[key]
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif summary == "true":
        node = spec().node(rtype)
        out = {
            k: v
            for k, v in resource.items()
            if k in keep_base or ((el := node.elements.get(k.lstrip("_"))) is not None and el.summary)
        }
    else:
        out = dict(resource)
    if elements:
        node = spec().node(rtype)
        wanted = set(elements)
        out = {
            k: v
            for k, v in out.items()
            if k in keep_base
            or k.lstrip("_") in wanted
            or ((el := node.elements.get(k.lstrip("_"))) is not None and el.choice_of in wanted)
            or (node.elements.get(k) is not None and node.elements[k].min >= 1)
        }
    meta = dict(out.get("meta") or {})
    tags = [tg for tg in meta.get("tag", []) if tg.get("code") != "SUBSETTED"]
    tags.append(
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED",
            "display": "subsetted",
        }
    )
    meta["tag"] = tags
    out["meta"] = meta
    return out
