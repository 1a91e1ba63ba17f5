"""The map of the synthetic province: Jilin's divisions from the shipped GB/T 2260 table, with
population weights, and the townships where residents of a given run live."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from changbai.synth.data import load

PROVINCE = "220000"


@dataclass(slots=True)
class Place:
    code: str
    name: str
    level: str  # province | city | county | township
    parent: str
    children: list[Place] = field(default_factory=list)

    @property
    def urban(self) -> bool:
        """Districts and streets (街道) are urban; counties, towns (镇) and townships (乡) rural."""
        return self.name.endswith(("区", "街道"))


@dataclass(slots=True)
class Map:
    places: dict[str, Place]
    cities: list[Place]
    counties: list[Place]  # populated counties (development zones excluded)
    other_counties: list[str]  # county codes outside Jilin, for residents born elsewhere

    def city_of(self, code: str) -> Place:
        place = self.places[code]
        while place.level not in ("city", "province"):
            place = self.places[place.parent]
        return place


@cache
def jilin() -> Map:
    path = resources.files("changbai.terminology").joinpath("data/divisions.csv")
    places: dict[str, Place] = {}
    other: list[str] = []
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            code = row["code"]
            if code.startswith("22"):
                places[code] = Place(code, row["name"], row["level"], row["parent"])
            elif row["level"] == "county" and is_real_county(code):
                other.append(code)
    for place in places.values():
        if place.parent in places:
            places[place.parent].children.append(place)
    cities = [p for p in places.values() if p.level == "city"]
    counties = [p for c in cities for p in c.children if is_real_county(p.code) and p.children]
    return Map(places, cities, counties, other)


def is_real_county(code: str) -> bool:
    """County-level codes 71-80 are statistical development zones, not GB/T 2260 divisions that issue IDs."""
    return len(code) == 6 and code[4:6] != "00" and not 71 <= int(code[4:6]) <= 80


def county_weights() -> dict[str, float]:
    """Share of the province's population per county: the city's census population split over its
    counties, districts weighted above counties (documented in docs/synth.md)."""
    pop = load("population")
    total = sum(pop["city_population"].values())
    weights: dict[str, float] = {}
    for city in jilin().cities:
        counties = [c for c in city.children if c in jilin().counties]
        raw = [pop["district_weight"] if c.name.endswith("区") else pop["county_weight"] for c in counties]
        city_share = pop["city_population"][city.code] / total
        for county, w in zip(counties, raw, strict=True):
            weights[county.code] = city_share * w / sum(raw)
    return weights


def choose_townships(rng: random.Random, residents: int) -> dict[str, list[Place]]:
    """The townships that are populated in a run of ``residents`` (all of them for a large run)."""
    per = load("population")["residents_per_township"]
    chosen: dict[str, list[Place]] = {}
    for code, share in county_weights().items():
        county = jilin().places[code]
        k = max(1, min(len(county.children), math.ceil(residents * share / per)))
        picked = rng.sample(county.children, k)
        chosen[code] = sorted(picked, key=lambda p: p.code)
    return chosen
