"""Chinese text: traditional -> simplified (OpenCC tables), pinyin with and without tones, fuzzy pinyin.

Clerks type what they hear, so 张/章, 刘/牛 (n/l in north-eastern speech) and 陈/程 (en/eng) are the
typical mistakes; comparing pinyin, then *fuzzy* pinyin, catches them where characters differ.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from opencc import OpenCC
from pypinyin import Style, lazy_pinyin

_T2S = OpenCC("t2s")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

#: Fuzzy pinyin: initials and finals that north-eastern and southern speakers merge (模糊音).
FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"), ("r", "l"), ("f", "h"))
FUZZY_FINALS = (("iang", "ian"), ("uang", "uan"), ("ang", "an"), ("eng", "en"), ("ing", "in"))


def to_simplified(text: str) -> str:
    """NFKC (full-width letters and digits to half-width) then traditional -> simplified characters."""
    text = unicodedata.normalize("NFKC", text)
    return _T2S.convert(text) if _HAN.search(text) else text


def is_han(ch: str) -> bool:
    return bool(_HAN.fullmatch(ch))


def has_han(text: str) -> bool:
    return bool(_HAN.search(text))


def syllables(text: str, tones: bool = False) -> list[str]:
    """Pinyin of each Han character ("lv3" style with tones, ü written v); other characters dropped."""
    style = Style.TONE3 if tones else Style.NORMAL
    out = lazy_pinyin(text, style=style, neutral_tone_with_five=True, errors="ignore")
    return [s for s in out if s.isascii() and s.isalnum()]


def fuzzy_syllable(syllable: str) -> str:
    """One toneless syllable with merged initials and finals, and ü as u: "zheng" -> "zen", "lv" -> "lu"."""
    s = syllable.replace("v", "u")
    for long, short in FUZZY_INITIALS:
        if s.startswith(long) and len(s) > len(long):
            s = short + s[len(long) :]
            break
    for long, short in FUZZY_FINALS:
        if s.endswith(long):
            s = s[: -len(long)] + short
            break
    return s


@lru_cache(maxsize=1)
def pinyin_syllables() -> frozenset[str]:
    """Every toneless syllable pypinyin knows (about 420), for splitting romanised names."""
    chars = "".join(chr(c) for c in range(0x4E00, 0x9FA6))
    return frozenset(s for s in lazy_pinyin(chars, style=Style.NORMAL) if s.isalpha())


def split_pinyin(word: str) -> list[str] | None:
    """ "sanfeng" -> ["san", "feng"]; None when the word is not pinyin (e.g. an English name)."""
    known = pinyin_syllables()
    n = len(word)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for end in range(1, n + 1):
        for start in range(max(0, end - 6), end):
            prev = best[start]
            piece = word[start:end]
            if prev is not None and piece in known:
                cand = [*prev, piece]
                if best[end] is None or len(cand) < len(best[end] or []):
                    best[end] = cand
    return best[n]


def fuzzy_word(word: str) -> str:
    """Fuzzy form of a romanised word, syllable by syllable when it is pinyin, else unchanged."""
    parts = split_pinyin(word)
    return "".join(fuzzy_syllable(p) for p in parts) if parts else word


def ascii_key(text: str) -> str:
    """Toneless pinyin of the Han characters with letters and digits kept ("光明街12号" ->
    "guangmingjie12hao"): string similarity then means the same in Python and in SQL engines that
    measure bytes, and a homophone slip in an address costs nothing."""
    out = "".join(_char_key(ch) for ch in to_simplified(text))
    return "".join(ch for ch in out.lower() if ch.isascii() and ch.isalnum())


@lru_cache(maxsize=50_000)
def _char_key(ch: str) -> str:
    """One character's toneless pinyin (cached: addresses repeat characters endlessly)."""
    return lazy_pinyin(ch, style=Style.NORMAL, errors="default")[0] if is_han(ch) else ch


_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_RR_INITIAL = ["g", "kk", "n", "d", "tt", "r", "m", "b", "pp", "s", "ss", "-", "j", "jj", "ch", "k", "t", "p", "h"]
_RR_MEDIAL = [
    "a",
    "ae",
    "ya",
    "yae",
    "eo",
    "e",
    "yeo",
    "ye",
    "o",
    "wa",
    "wae",
    "oe",
    "yo",
    "u",
    "wo",
    "we",
    "wi",
    "yu",
    "eu",
    "ui",
    "i",
]
_RR_FINAL = [
    "",
    *[
        "k",
        "k",
        "k",
        "n",
        "n",
        "n",
        "t",
        "l",
        "k",
        "m",
        "l",
        "l",
        "l",
        "p",
        "l",
        "m",
        "p",
        "p",
        "t",
        "t",
        "ng",
        "t",
        "t",
        "k",
        "t",
        "p",
        "t",
    ],
]


def has_hangul(text: str) -> bool:
    return bool(_HANGUL.search(text))


def romanise_hangul(text: str) -> str:
    """Revised Romanization of Korean, syllable by syllable ("리남수" -> "rinamsu"); other characters kept."""
    out = []
    for ch in text:
        code = ord(ch) - 0xAC00
        if 0 <= code < 11172:
            initial, medial, final = code // 588, (code % 588) // 28, code % 28
            lead = _RR_INITIAL[initial].replace("-", "")
            out.append(lead + _RR_MEDIAL[medial] + _RR_FINAL[final])
        else:
            out.append(ch)
    return "".join(out)
