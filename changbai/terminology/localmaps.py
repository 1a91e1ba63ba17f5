"""Maps from a facility's local codes to the platform's code systems.

The workflow an operator follows: upload the facility's code list (CSV: code,name) -> get ranked
suggestions in a target code system (same code, same name, Chinese character-bigram similarity, and
pinyin similarity for homophone typos) -> mark the right one in the suggestions CSV -> build a
ConceptMap that the integration layer uses with $translate.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pypinyin import lazy_pinyin

from changbai.errors import InvalidInput
from changbai.terminology.codesystem import CodeSystemIndex

LOCAL_BASE = "https://changbai.example/fhir/CodeSystem/local"
_NOISE = re.compile(r"[\s,，、.。;；:：()（）\[\]【】\"'“”/\\\-_]+")


@dataclass
class LocalCode:
    code: str
    name: str


@dataclass
class Candidate:
    code: str
    display: str
    score: float
    reason: str


@dataclass
class Suggestion:
    local: LocalCode
    candidates: list[Candidate] = field(default_factory=list)


def read_local_codes(data: str | Path) -> list[LocalCode]:
    """A facility's code list: CSV with a header containing 'code' and 'name' (UTF-8, BOM allowed)."""
    text = data.read_text(encoding="utf-8-sig") if isinstance(data, Path) else data.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text))
    fields = {f.strip().lower(): f for f in reader.fieldnames or []}
    if "code" not in fields or "name" not in fields:
        raise InvalidInput("The local code list needs the columns 'code' and 'name'")
    out, seen = [], set()
    for line, row in enumerate(reader, start=2):
        code = (row.get(fields["code"]) or "").strip()
        name = (row.get(fields["name"]) or "").strip()
        if not code:
            raise InvalidInput(f"Row {line} of the local code list has no code")
        if code in seen:
            raise InvalidInput(f"Local code '{code}' appears twice (row {line})")
        seen.add(code)
        out.append(LocalCode(code, name))
    return out


def normalise(text: str) -> str:
    return _NOISE.sub("", text).lower()


def bigrams(text: str) -> set[str]:
    t = normalise(text)
    if len(t) < 2:
        return {t} if t else set()
    return {t[i : i + 2] for i in range(len(t) - 1)}


def dice(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return 2 * len(a & b) / (len(a) + len(b))


def pinyin_grams(text: str) -> set[str]:
    syllables = lazy_pinyin(normalise(text))
    if len(syllables) < 2:
        return set(syllables)
    return {f"{syllables[i]} {syllables[i + 1]}" for i in range(len(syllables) - 1)}


class Matcher:
    """Suggests target concepts for local codes; index built once per target code system."""

    def __init__(self, target: CodeSystemIndex) -> None:
        self.target = target
        self.by_gram: dict[str, set[str]] = defaultdict(set)
        self.by_pinyin: dict[str, set[str]] = defaultdict(set)
        self.grams: dict[str, set[str]] = {}
        self.pinyin: dict[str, set[str]] = {}
        self.by_name: dict[str, str] = {}
        self.by_code: dict[str, str] = {}
        for code, concept in target.concepts.items():
            if concept.abstract:
                continue  # groupings (chapters, blocks, categories of a list) are not mapping targets
            self.by_code[_code_key(code)] = code
            names = [concept.display or ""] + [d.get("value", "") for d in concept.designations]
            grams: set[str] = set()
            for name in names:
                if name:
                    self.by_name.setdefault(normalise(name), code)
                    grams |= bigrams(name)
            self.grams[code] = grams
            self.pinyin[code] = pinyin_grams(concept.display or "")
            for g in grams:
                self.by_gram[g].add(code)
            for g in self.pinyin[code]:
                self.by_pinyin[g].add(code)

    def suggest(self, local: LocalCode, top: int = 3) -> Suggestion:
        found: dict[str, Candidate] = {}

        def offer(code: str, score: float, reason: str) -> None:
            if code not in found or found[code].score < score:
                c = self.target.concepts[code]
                found[code] = Candidate(code, c.display or "", round(score, 3), reason)

        same_code = self.by_code.get(_code_key(local.code))
        if same_code is not None:
            name_score = dice(bigrams(local.name), self.grams[same_code]) if local.name else 0.0
            offer(same_code, 0.6 + 0.4 * name_score, "same code")
        same_name = self.by_name.get(normalise(local.name)) if local.name else None
        if same_name is not None:
            offer(same_name, 1.0, "same name")
        grams = bigrams(local.name)
        pool: set[str] = set()
        for g in grams:
            pool |= self.by_gram.get(g, set())
        for code in pool:
            offer(code, 0.95 * dice(grams, self.grams[code]), "name similarity")
        pin = pinyin_grams(local.name)
        pool = set()
        for g in pin:
            pool |= self.by_pinyin.get(g, set())
        for code in pool:
            offer(code, 0.85 * dice(pin, self.pinyin[code]), "pinyin similarity")
        ranked = sorted(found.values(), key=lambda c: (-c.score, c.code))
        return Suggestion(local, [c for c in ranked[:top] if c.score > 0.2])


def _code_key(code: str) -> str:
    return code.replace(".", "").replace("-", "").upper()


def suggest(local_codes: Iterable[LocalCode], target: CodeSystemIndex, top: int = 3) -> list[Suggestion]:
    matcher = Matcher(target)
    return [matcher.suggest(lc, top) for lc in local_codes]


SUGGESTION_COLUMNS = [
    "local_code",
    "local_name",
    "rank",
    "target_code",
    "target_display",
    "score",
    "reason",
    "confirmed",
]


def suggestions_csv(suggestions: list[Suggestion]) -> str:
    """The file the operator reviews: one row per candidate; put 'y' in 'confirmed' on the right one.
    The best candidate is pre-marked when its score is 0.95 or more (same name, or same code and name)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SUGGESTION_COLUMNS)
    for s in suggestions:
        if not s.candidates:
            w.writerow([s.local.code, s.local.name, "", "", "", "", "no candidate", ""])
        for rank, c in enumerate(s.candidates, start=1):
            mark = "y" if rank == 1 and c.score >= 0.95 else ""
            w.writerow([s.local.code, s.local.name, rank, c.code, c.display, f"{c.score:.3f}", c.reason, mark])
    return buf.getvalue()


def confirmed_rows(text: str) -> list[tuple[str, str, str]]:
    """(local code, local name, target code) for every confirmed row of a reviewed suggestions CSV."""
    out = []
    chosen: dict[str, str] = {}
    for line, row in enumerate(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))), start=2):
        if (row.get("confirmed") or "").strip().lower() not in ("y", "yes", "1", "true", "是"):
            continue
        local, target = row["local_code"].strip(), row["target_code"].strip()
        if not target:
            raise InvalidInput(f"Row {line} is confirmed but names no target code")
        if local in chosen and chosen[local] != target:
            raise InvalidInput(f"Local code '{local}' is confirmed to two targets ({chosen[local]}, {target})")
        chosen[local] = target
        out.append((local, row.get("local_name", "").strip(), target))
    return out


def local_system(facility: str) -> str:
    return f"{LOCAL_BASE}/{facility}"


def concept_map(
    facility: str, target: CodeSystemIndex, confirmed: list[tuple[str, str, str]], *, version: str = "1"
) -> dict[str, Any]:
    """The facility's ConceptMap (local system -> target system) from confirmed pairs."""
    if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", facility):
        raise InvalidInput("A facility id is 1-64 letters, digits, '-' or '.'")
    elements = []
    for local, name, code in dict.fromkeys(confirmed):
        concept = target.get(code)
        if concept is None:
            raise InvalidInput(f"'{code}' is not a code of {target.url}")
        el: dict[str, Any] = {"code": local}
        if name:
            el["display"] = name
        el["target"] = [{"code": concept.code, "display": concept.display, "equivalence": "equivalent"}]
        elements.append(el)
    cm_id = f"local-{facility}-to-{re.sub(r'[^A-Za-z0-9]+', '-', target.url.rsplit('/', 1)[-1])}"[:64]
    return {
        "resourceType": "ConceptMap",
        "id": cm_id,
        "url": f"https://changbai.example/fhir/ConceptMap/{cm_id}",
        "version": version,
        "name": re.sub(r"[^A-Za-z0-9]", "", f"Local{facility.title()}Map"),
        "title": f"机构 {facility} 本地编码 -> {target.resource.get('title') or target.url}",
        "status": "active",
        "group": [{"source": local_system(facility), "target": target.url, "element": elements}],
    }
