"""Names of residents and staff: Han surnames by frequency, given names by sex and birth generation,
Manchu, Mongol and Hui surname pools, and Korean-Chinese names with their hangul form (Yanbian usage)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from itertools import accumulate

from changbai.synth.data import load


@dataclass(slots=True)
class Name:
    family: str
    given: str
    korean: tuple[str, str] | None = None  # (family, given) in hangul

    @property
    def text(self) -> str:
        return self.family + self.given


class _Pool:
    """Weighted choice with precomputed cumulative weights (random.choices without re-summing)."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.items = list(weights)
        self.cum = list(accumulate(weights.values()))

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.items, cum_weights=self.cum)[0]


@cache
def _pools() -> dict[str, _Pool]:
    n = load("names")
    pools = {
        "01": _Pool(n["han_surnames"]),
        "11": _Pool(n["manchu_surnames"]),
        "02": _Pool(n["mongol_surnames"]),
        "03": _Pool(n["hui_surnames"]),
        "10": _Pool({k: v[1] for k, v in n["korean_surnames"].items()}),
    }
    return pools


def _generation(birth_year: int) -> str:
    if birth_year < 1960:
        return "1900"
    if birth_year < 1980:
        return "1960"
    if birth_year < 2000:
        return "1980"
    return "2000"


def surname(rng: random.Random, ethnicity: str) -> str:
    return _pools().get(ethnicity, _pools()["01"]).pick(rng)


def given(rng: random.Random, sex: str, birth_year: int, ethnicity: str) -> str:
    n = load("names")
    if ethnicity == "10":
        chars = n["korean_given"][sex]
        if sex == "female" and rng.random() < 0.5:
            return rng.choice(chars) + rng.choice(("姬", "淑", "玉", "顺", "花", "子"))
        return rng.choice(chars) + rng.choice(chars)
    chars = n["given_chars"][sex][_generation(birth_year)]
    if rng.random() < n["single_char_given_share"]:
        return rng.choice(chars)
    first, second = rng.choice(chars), rng.choice(chars)
    while second == first and rng.random() < 0.8:
        second = rng.choice(chars)
    return first + second


def person_name(rng: random.Random, family: str, sex: str, birth_year: int, ethnicity: str) -> Name:
    g = given(rng, sex, birth_year, ethnicity)
    return Name(family, g, hangul(family, g) if ethnicity == "10" else None)


def hangul(family: str, given_name: str) -> tuple[str, str] | None:
    n = load("names")
    fam = n["korean_surnames"].get(family)
    syllables = n["korean_syllables"]
    parts = [syllables.get(c) for c in given_name]
    if fam is None or any(p is None for p in parts):
        return None
    return fam[0], "".join(p for p in parts if p)
