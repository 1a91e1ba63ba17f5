"""Person names reduced to comparable keys: characters, pinyin with tones, pinyin, fuzzy pinyin.

A name may arrive as 张三, 張三, "Zhang San", "ZHANG SAN", "San Zhang", "ZhangSan", a minority name with a
middle dot (阿卜杜拉·买买提) or a Korean-Chinese name romanised the Korean way ("Park Myeongcheol" for
朴明哲). Every form is turned into surname-first toneless pinyin (``plain``) plus the other order
(``alt``), so that a comparison is a set intersection whichever way the name was written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from changbai.identity.chinese import (
    fuzzy_syllable,
    fuzzy_word,
    has_han,
    has_hangul,
    is_han,
    romanise_hangul,
    syllables,
    to_simplified,
)

_SEPARATORS = re.compile(r"[\s·•・‧.\-_,，'’()（）]+")


@dataclass(frozen=True)
class NameKeys:
    text: str  # simplified characters (or lower-case letters), separators removed
    script: str  # han | latin | hangul
    tones: str  # "zhang1san1" (Han only; empty for romanised names)
    plain: str  # toneless, surname first: "zhangsan"
    alt: str  # the other order: "sanzhang"
    fuzzy: str  # plain with fuzzy initials/finals merged
    fuzzy_alt: str
    surname: str  # toneless pinyin (or romanised) surname


def _read_table(name: str) -> list[list[str]]:
    text = resources.files("changbai.identity").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def surname_readings() -> dict[str, list[str]]:
    """Surname -> tone-numbered syllables, for readings that differ as surnames and compound surnames."""
    return {row[0]: row[1].split() for row in _read_table("surnames.tsv")}


@lru_cache(maxsize=1)
def korean_surnames() -> dict[str, str]:
    return {row[0]: row[1] for row in _read_table("korean_surnames.tsv")}


@lru_cache(maxsize=200_000)
def name_keys(name: str) -> NameKeys | None:
    """Keys of one written name, or None when nothing usable is left."""
    text = to_simplified(name).strip()
    if not text:
        return None
    if has_han(text):
        return _han_keys(text)
    if has_hangul(text):  # a Korean-Chinese name typed in hangul only: compare its romanisation
        keys = _latin_keys(" ".join(romanise_hangul(t) for t in _SEPARATORS.split(text) if t))
        hangul = "".join(ch for ch in text if has_hangul(ch))
        return replace(keys, text=hangul, script="hangul") if keys else None
    return _latin_keys(text)


def _han_keys(text: str) -> NameKeys | None:
    parts = [p for p in _SEPARATORS.split(text) if p]
    han = "".join(ch for ch in "".join(parts) if is_han(ch))
    if not han:
        return None
    if len(parts) > 1:  # minority name in components (阿卜杜拉·买买提): no surname, order may vary
        comps = ["".join(syllables(p)) for p in parts]
        tone = "".join(syllables(han, tones=True))
        plain, alt = "".join(comps), "".join(reversed(comps))
        fuzzy = "".join(fuzzy_word(c) for c in comps)
        fuzzy_alt = "".join(fuzzy_word(c) for c in reversed(comps))
        return NameKeys(han, "han", tone, plain, alt, fuzzy, fuzzy_alt, comps[0])
    readings = surname_readings()
    sur_len = 2 if han[:2] in readings else 1
    sur_tones = readings.get(han[:sur_len]) or syllables(han[:sur_len], tones=True)
    given_tones = syllables(han[sur_len:], tones=True)
    sur = [s.rstrip("012345") for s in sur_tones]
    given = [s.rstrip("012345") for s in given_tones]
    fz_sur = "".join(fuzzy_syllable(s) for s in sur)
    fz_given = "".join(fuzzy_syllable(s) for s in given)
    return NameKeys(
        text=han,
        script="han",
        tones="".join(sur_tones + given_tones),
        plain="".join(sur + given),
        alt="".join(given + sur),
        fuzzy=fz_sur + fz_given,
        fuzzy_alt=fz_given + fz_sur,
        surname="".join(sur),
    )


def _latin_word(word: str) -> str:
    word = word.lower().replace("ü", "v").replace("u:", "v")
    return {"lyu": "lv", "nyu": "nv"}.get(word, word)


def _latin_keys(text: str) -> NameKeys | None:
    tokens = [_latin_word(t) for t in _SEPARATORS.split(text) if t]
    tokens = ["".join(ch for ch in t if ch.isalnum()) for t in tokens]
    tokens = [t for t in tokens if t]
    if not tokens:
        return None
    korean = korean_surnames()
    # A Korean romanised surname (Park, Kim, Lee) is replaced by the Mandarin reading of its character.
    first = korean.get(tokens[0], tokens[0]) if len(tokens) > 1 else tokens[0]
    last = korean.get(tokens[-1], tokens[-1]) if len(tokens) > 1 else tokens[-1]
    written = [first, *tokens[1:-1], last] if len(tokens) > 1 else tokens
    plain = "".join(written)
    # "San Zhang": the surname may come last; the alternative order puts the last word first.
    alt = "".join([written[-1], *written[:-1]]) if len(written) > 1 else plain
    return NameKeys(
        text=" ".join(tokens),
        script="latin",
        tones="",
        plain=plain,
        alt=alt,
        fuzzy="".join(fuzzy_word(t) for t in written),
        fuzzy_alt="".join(fuzzy_word(t) for t in [written[-1], *written[:-1]]),
        surname=written[0],
    )


def shape_similar(a: str, b: str) -> bool:
    """Different Han names whose characters differ only by look-alikes (王芳/玉芳) — a keying slip."""
    return a != b and shape_key(a) == shape_key(b)


@lru_cache(maxsize=1)
def _shape_classes() -> dict[str, str]:
    """Each look-alike character -> one representative of its (transitively merged) group."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for row in _read_table("similar_chars.txt"):
        for ch in row[0][1:]:
            parent[find(ch)] = find(row[0][0])
    return {ch: find(ch) for ch in parent}


def shape_key(text: str) -> str:
    """The name with each look-alike character replaced by its group's representative (王/玉/主 -> one)."""
    classes = _shape_classes()
    return "".join(classes.get(ch, ch) for ch in text)
