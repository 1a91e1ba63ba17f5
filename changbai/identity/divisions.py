"""GB/T 2260 administrative divisions (from the terminology data) and address parsing down to township.

Registration clerks write addresses freely ("吉林延吉市河南街道…", "延边州延吉市…", "長春市九台區"); the
matcher compares divisions, not text, so an address is parsed into province / city / county / township
codes by walking the division tree from the start of the string, longest name first.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from changbai.identity.chinese import to_simplified

#: Names that are not places (Beijing's "市辖区" city level) and must never match address text.
_PLACEHOLDERS = {"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"}
_SUFFIXES = re.compile(
    r"(?:特别行政区|维吾尔自治区|壮族自治区|回族自治区|自治区|自治州|自治县|自治旗|地区|街道|省|市|区|县|旗|盟|镇|乡)$"
)
#: The home province, preferred when a bare name (e.g. "朝阳区") exists in several provinces.
HOME_PROVINCE = "220000"


@dataclass(frozen=True)
class Division:
    code: str
    name: str
    level: str  # province | city | county | township
    parent: str


@dataclass(frozen=True)
class ParsedAddress:
    province: str | None = None
    city: str | None = None
    county: str | None = None
    township: str | None = None
    rest: str = ""

    @property
    def finest(self) -> str | None:
        return self.township or self.county or self.city or self.province


class DivisionTable:
    """All divisions, indexed by code and by full and short name."""

    def __init__(self, rows: list[Division]) -> None:
        self.by_code = {d.code: d for d in rows}
        self.by_name: dict[str, list[Division]] = {}
        for d in rows:
            if d.name in _PLACEHOLDERS:
                continue
            for name in aliases(d.name):
                if len(name) >= 2:
                    self.by_name.setdefault(name, []).append(d)
        self.max_name = max(len(n) for n in self.by_name)

    def get(self, code: str) -> Division | None:
        return self.by_code.get(code)

    def ancestors(self, code: str) -> list[Division]:
        """The division and its ancestors, finest first."""
        chain = []
        d = self.by_code.get(code)
        while d is not None:
            chain.append(d)
            d = self.by_code.get(d.parent) if d.parent else None
        return chain

    def is_within(self, code: str, ancestor: str) -> bool:
        return any(d.code == ancestor for d in self.ancestors(code))

    def parse(self, text: str) -> ParsedAddress:
        """Divisions named at the start of ``text`` (any level may be skipped), and the rest."""
        s = re.sub(r"\s+", "", to_simplified(text))
        pos, current = 0, None
        while pos < len(s):
            found = self._match_at(s, pos, current)
            if found is None:
                break
            division, length = found
            current = division
            pos += length
        if current is None:
            return ParsedAddress(rest=s)
        levels = {d.level: d.code for d in self.ancestors(current.code)}
        return ParsedAddress(
            province=levels.get("province"),
            city=levels.get("city"),
            county=levels.get("county"),
            township=levels.get("township"),
            rest=s[pos:],
        )

    def _match_at(self, s: str, pos: int, current: Division | None) -> tuple[Division, int] | None:
        for length in range(min(self.max_name, len(s) - pos), 1, -1):
            options = self.by_name.get(s[pos : pos + length])
            if not options:
                continue
            if current is not None:
                options = [d for d in options if d.code != current.code and self.is_within(d.code, current.code)]
            elif any(d.level == "township" for d in options):
                # A bare township name with no county before it is too ambiguous to trust.
                options = [d for d in options if d.level != "township"]
            if options:
                return _preferred(options), length
        return None


_LEVEL_RANK = {"province": 0, "city": 1, "county": 2, "township": 3}


def _preferred(options: list[Division]) -> Division:
    return min(options, key=lambda d: (not d.code.startswith(HOME_PROVINCE[:2]), _LEVEL_RANK[d.level], d.code))


def aliases(name: str) -> set[str]:
    """The full name, the short name, and for autonomous divisions the short name with 县/州/旗 ("长白县")."""
    short = short_name(name)
    names = {name, short}
    if short != name and name[-3:] in ("自治县", "自治州", "自治旗"):
        names.add(short + name[-1])
    return names


def short_name(name: str) -> str:
    """ "延边朝鲜族自治州" -> "延边", "吉林省" -> "吉林", "九台区" -> "九台" (kept whole when too short)."""
    stripped = _SUFFIXES.sub("", name)
    changed = True
    while changed:
        changed = False
        for group in _ethnic_groups():
            if stripped.endswith(group) and len(stripped) - len(group) >= 2:
                stripped, changed = stripped[: -len(group)], True
    return stripped if len(stripped) >= 2 else name


@lru_cache(maxsize=1)
def _ethnic_groups() -> tuple[str, ...]:
    text = resources.files("changbai.identity").joinpath("data/ethnic_groups.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return tuple(sorted(names, key=len, reverse=True))


@lru_cache(maxsize=1)
def divisions() -> DivisionTable:
    path = resources.files("changbai.terminology").joinpath("data/divisions.csv")
    with path.open(encoding="utf-8") as f:
        rows = [Division(r["code"], r["name"], r["level"], r["parent"] or "") for r in csv.DictReader(f)]
    return DivisionTable(rows)
