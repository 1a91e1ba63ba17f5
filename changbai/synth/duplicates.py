"""Duplicate registrations: the same resident registered again at another facility, with the errors
real registration desks make. Each source record and its errors go to the ground truth."""

from __future__ import annotations

import copy
import random
from functools import cache
from typing import Any

from changbai.synth import gb11643, systems
from changbai.synth.data import load
from changbai.synth.elements import day
from changbai.synth.facilities import address
from changbai.synth.geography import Map, Place
from changbai.synth.people import Person


@cache
def _s2t() -> Any:
    import opencc

    return opencc.OpenCC("s2t")


def _pinyin(text: str) -> str:
    from pypinyin import lazy_pinyin

    return "".join(lazy_pinyin(text)).capitalize()  # "Minjie", as pinyin writes a given name


def _swap_char(rng: random.Random, text: str, table: dict[str, str]) -> str | None:
    spots = [i for i, c in enumerate(text) if c in table and table[c] != c]
    if not spots:
        return None
    i = rng.choice(spots)
    return text[:i] + rng.choice(table[text[i]]) + text[i + 1 :]


def make_record(
    rng: random.Random,
    base: dict[str, Any],
    p: Person,
    pid: str,
    org: str,
    mrn: str,
    geo: Map,
    townships: dict[str, list[Place]],
    phones: set[str],
) -> tuple[dict[str, Any], list[str]]:
    """A duplicate of ``base`` (the primary Patient) registered at ``org``, and the errors it carries."""
    spec = load("registration")
    err = spec["errors"]
    rec = copy.deepcopy(base)  # once per duplicate, not per resource
    rec["id"] = pid
    rec["identifier"][1]["system"] = systems.MRN + org
    rec["identifier"][1]["value"] = mrn
    rec.pop("managingOrganization", None)
    rec.pop("deceasedDateTime", None)  # the other facility has not heard
    applied: list[str] = []
    name = rec["name"][0]
    family, given = name["family"], name["given"][0]

    if rng.random() < err["homophone"]:
        changed = _swap_char(rng, given, spec["homophones"]) or None
        if changed is None and rng.random() < 0.5:
            fam = _swap_char(rng, family, spec["homophones"])
            if fam:
                family = fam
                applied.append("homophone")
        elif changed:
            given = changed
            applied.append("homophone")
    if rng.random() < err["typo_char"]:
        changed = _swap_char(rng, given, spec["similar_shape"])
        if changed:
            given = changed
            applied.append("typo_char")
    if rng.random() < err["nickname"] and len(given) >= 1:
        pattern = rng.choice(spec["nickname_patterns"])
        given = pattern.format(last=given[-1])
        applied.append("nickname")
    if rng.random() < err["traditional"]:
        trad = _s2t().convert(family + "\u0001" + given)
        t_family, t_given = trad.split("\u0001")
        if (t_family, t_given) != (family, given):
            family, given = t_family, t_given
            applied.append("traditional")
    korean = [n for n in rec["name"][1:] if n.get("extension")]
    if korean and not applied and rng.random() < err["hangul_only"]:
        # a Yanbian desk typed the Korean name only
        k = korean[0]
        rec["name"] = [{"use": "official", "text": k["text"], "family": k["family"], "given": k["given"]}]
        applied.append("hangul_only")
    elif rng.random() < err["pinyin"]:
        family, given = _pinyin(family), _pinyin(given)
        rec["name"] = [{"use": "official", "text": f"{family} {given}", "family": family, "given": [given]}]
        applied.append("pinyin")
    else:
        rec["name"][0] = {"use": "official", "text": family + given, "family": family, "given": [given]}

    ident = rec["identifier"][0]
    number = p.resident_id
    r = rng.random()
    if r < err["missing_id"]:
        rec["identifier"].pop(0)
        applied.append("missing_id")
    elif r < err["missing_id"] + err["id15"] and number[6:8] == "19":
        ident["value"] = gb11643.to_15(number)
        applied.append("id15")
    elif r < err["missing_id"] + err["id15"] + err["transposed_id"]:
        i = rng.choice([k for k in range(16) if number[k] != number[k + 1]] or [0])
        ident["value"] = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
        if ident["value"] != number:
            applied.append("transposed_id")
    elif r < err["missing_id"] + err["id15"] + err["transposed_id"] + err["id_typo"]:
        i = rng.randrange(17)
        ident["value"] = number[:i] + str((int(number[i]) + rng.randint(1, 9)) % 10) + number[i + 1 :]
        applied.append("id_typo")

    r = rng.random()
    if r < err["changed_phone"]:
        new = rng.choice(load("population")["mobile_prefixes"]) + f"{rng.randrange(10**8):08d}"
        if new not in phones:
            rec["telecom"] = [{"system": "phone", "value": new, "use": "mobile"}]
            applied.append("changed_phone")
    elif r < err["changed_phone"] + err["missing_phone"] and "telecom" in rec:
        del rec["telecom"]
        applied.append("missing_phone")

    if rng.random() < err["moved_address"]:
        county = p.township.parent  # type: ignore[union-attr]
        if rng.random() >= spec["moved_within_county"]:
            county = rng.choice(list(townships))
        town = rng.choice(townships[county])
        from changbai.synth.people import _line

        rec["address"] = [address(town, geo, _line(rng, town, load("population")), "home")]
        applied.append("moved_address")

    if rng.random() < err["birthdate_typo"]:
        b = day(p.birth)
        y, m, d = b.split("-")
        if int(d) <= 12 and d != m:
            new = f"{y}-{d}-{m}"  # day and month swapped
        else:
            new = f"{y}-{m}-{min(28, int(d)) - 1:02d}" if int(d) > 1 else f"{y}-{m}-02"
        rec["birthDate"] = new
        applied.append("birthdate_typo")
    return rec, applied
