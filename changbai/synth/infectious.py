"""Notifiable infectious diseases: seasonal baseline cases per county, and injected outbreaks (a cluster
of one disease in one township over a few weeks) whose ground truth is kept."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from changbai.synth.care import Care
from changbai.synth.data import band_value, load
from changbai.synth.elements import icd10
from changbai.synth.people import Person


@dataclass(slots=True)
class Case:
    condition: str
    encounter: str
    patient: str
    person: str
    disease: str
    icd: str
    county: str
    township: str
    onset: str
    outbreak: str = ""


@dataclass(slots=True)
class Outbreak:
    id: str
    disease: str
    icd: str
    display: str
    county: str
    county_name: str
    township: str
    township_name: str
    start: str
    end: str
    size: int
    cases: list[str] = field(default_factory=list)


def _season_day(rng: random.Random, season: list[float], lo: int, hi: int) -> int | None:
    """A day in [lo, hi] drawn with the disease's monthly weights."""
    first, last = date.fromordinal(lo), date.fromordinal(hi)
    months = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        months.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    y, m = rng.choices(months, weights=[season[mm - 1] for _, mm in months])[0]
    d = date(y, m, rng.randint(1, 28)).toordinal()
    return d if lo <= d <= hi else None


def _case(care: Care, p: Person, d: dict[str, Any], when: int, outbreak: str = "") -> Case:
    fac = care.facility(p, d["level"])
    v = care.visit(p, fac, when)
    resolved = None if d.get("followups") or when + 10 >= care.as_of else when + 10
    cid = care.condition(
        v,
        p,
        d["icd"],
        d["display"],
        max(p.birth, when - care.rng.randint(0, 3)),
        category="encounter-diagnosis",
        resolved=resolved,
    )
    for drug in d["drugs"]:
        care.prescribe(v, drug, cid)
    care.finish(v)
    for month in range(1, d.get("followups", 0) + 1):
        # monthly treatment visits (TB: directly observed treatment, drugs for 30 days at a time)
        later = when + 30 * month
        if later >= care.as_of or not p.alive_on(later):
            break
        f = care.visit(p, fac, later)
        f.conditions.append((cid, d["icd"]))
        f.reasons.append(icd10(d["icd"], d["display"]))
        for drug in d["drugs"]:
            care.prescribe(f, drug, cid)
        care.finish(f)
    town = p.township
    assert town is not None
    return Case(
        cid,
        v.id,
        v.patient,
        p.pid,
        d["key"],
        d["icd"],
        town.parent,
        town.code,
        date.fromordinal(when).isoformat(),
        outbreak,
    )


def _eligible(d: dict[str, Any], p: Person) -> float:
    """The relative risk of a person for a disease (0 when outside its ages or setting)."""
    if not d["ages"][0] <= p.age <= d["ages"][1]:
        return 0.0
    if d.get("rural_only") and p.township is not None and p.township.urban:
        return 0.0
    return float(band_value(d["age_weight"], p.age, 1.0))


def baseline(care: Care, people: list[Person]) -> list[Case]:
    """Sporadic cases: each disease's population-wide incidence spread over the people at risk by age."""
    rng = care.rng
    diseases = load("infectious")["diseases"]
    # normalise so that the expected number of cases is incidence x population, whatever the age mix
    scale = {d["key"]: len(people) / (sum(_eligible(d, p) for p in people) or 1.0) for d in diseases}
    cases = []
    for p in people:
        lo, hi = care.window(p)
        if hi < lo:
            continue
        years = (hi - lo + 1) / 365.25
        for d in diseases:
            risk = _eligible(d, p)
            if risk and rng.random() < d["per_100k"] / 100_000 * risk * scale[d["key"]] * years:
                when = _season_day(rng, d["season"], lo, hi)
                if when is not None:
                    cases.append(_case(care, p, d, when))
    return cases


def outbreaks(care: Care, people: list[Person], residents: int) -> tuple[list[Outbreak], list[Case]]:
    rng = care.rng
    spec = load("infectious")
    params = spec["outbreaks"]
    by_key = {d["key"]: d for d in spec["diseases"]}
    by_town: dict[str, list[Person]] = {}
    for p in people:
        by_town.setdefault(p.township.code, []).append(p)  # type: ignore[union-attr]
    towns = sorted(by_town)
    wanted = max(params["min"], round(residents / 10_000 * params["per_10k_residents"]))
    found: list[Outbreak] = []
    cases: list[Case] = []
    used: set[str] = set()
    for _ in range(wanted * 20):
        if len(found) >= wanted:
            break
        key = rng.choice(sorted(params["diseases"]))
        d = by_key[key]
        town = rng.choice(towns)
        # outbreaks cluster in the season's peak: weights squared
        start = _season_day(rng, [w * w for w in d["season"]], care.start, care.as_of - 60)
        if start is None:
            continue
        duration = rng.randint(*params["duration_days"])
        low, high = d["ages"]
        eligible = [
            p
            for p in by_town[town]
            if low <= p.age <= high and p.alive_on(start + duration) and p.pid not in used and p.birth < start
        ]
        smallest, largest = params["diseases"][key]
        if len(eligible) < smallest:
            # the township is small in a small run: take the county's residents of that age as well
            county = care.geo.places[town].parent
            eligible += [
                p
                for t in towns
                if care.geo.places[t].parent == county and t != town
                for p in by_town[t]
                if low <= p.age <= high and p.alive_on(start + duration) and p.pid not in used and p.birth < start
            ]
        if len(eligible) < smallest:
            continue
        size = min(len(eligible), rng.randint(smallest, largest))
        chosen = rng.sample(eligible, size)
        oid = f"outbreak-{len(found) + 1}"
        place = care.geo.places[town]
        ob = Outbreak(
            oid,
            key,
            d["icd"],
            d["display"],
            place.parent,
            care.geo.places[place.parent].name,
            town,
            place.name,
            date.fromordinal(start).isoformat(),
            "",
            size,
        )
        last = start
        for p in chosen:
            # an epidemic curve: most cases in the first half of the outbreak
            when = start + int(duration * rng.triangular(0, 1, 0.3))
            last = max(last, when)
            c = _case(care, p, d, when, oid)
            cases.append(c)
            ob.cases.append(c.condition)
            used.add(p.pid)
        ob.end = date.fromordinal(last).isoformat()
        found.append(ob)
    return found, cases
