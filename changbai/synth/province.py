"""`generate`: the whole synthetic province, written as FHIR Bulk Data NDJSON plus ground truth.

Determinism: every random draw comes from a ``random.Random`` seeded from (seed, stream name); ids are
sequential per type; no clock, uuid or set iteration order is involved. The same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from changbai.errors import InvalidInput
from changbai.synth import codesystems, duplicates, facilities, immunisation, infectious, people
from changbai.synth.care import Care
from changbai.synth.claims import Claims
from changbai.synth.data import load
from changbai.synth.elements import day, ordinal
from changbai.synth.geography import choose_townships, jilin
from changbai.synth.output import Output

MAX_RESIDENTS = 2_000_000
GROUND_TRUTH = "ground-truth"


def stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible random stream for one part of the generator."""
    return random.Random(f"changbai-synth:{seed}:{name}")


def generate(out_dir: Path, residents: int, seed: int, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write a province of ``residents`` residents into ``out_dir``; return the resource counts by type.

    ``progress`` is called with the number of residents whose records are written so far (0..residents).
    """
    if not 1 <= residents <= MAX_RESIDENTS:
        raise InvalidInput(f"residents must be between 1 and {MAX_RESIDENTS}", expression="residents")
    out_dir = Path(out_dir)
    try:
        _clear(out_dir)
        (out_dir / GROUND_TRUTH).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot write the province to {out_dir}: {exc.strerror or exc}", expression="out") from exc
    pop = load("population")
    as_of, start = ordinal(pop["as_of"]), ordinal(pop["care_start"])
    geo = jilin()
    out = Output(out_dir)
    try:
        townships = choose_townships(stream(seed, "geography"), residents)
        codesystems.emit(out)
        reg = facilities.build(out, stream(seed, "facilities"), geo, townships, residents)
        rng = stream(seed, "people")
        persons = people.sample_people(rng, residents, as_of, start)
        households = people.form_households(rng, persons)
        people.settle(rng, households, geo, townships)
        records = _register(out, stream(seed, "registration"), persons, reg, geo, townships, start)
        care = Care(out, stream(seed, "care"), reg, geo, as_of, start, Claims(out, stream(seed, "claims")))
        for p in persons:
            care.assign_chronic(p)
        vacc = stream(seed, "immunisation")
        if progress:
            progress(0)
        for done, p in enumerate(persons, start=1):
            care.contract(p)
            care.person(p)
            clinic = care.facility(p, "primary")
            born_at = care.birth_facility.get(p.idx) or care.facility(p, "county")
            immunisation.vaccinate(out, vacc, p, clinic, born_at, as_of)
            if progress and (done % 100 == 0 or done == residents):
                progress(done)
        ph = Care(
            out, stream(seed, "infectious"), reg, geo, as_of, start, Claims(out, stream(seed, "infectious-claims"))
        )
        cases = infectious.baseline(ph, persons)
        found, outbreak_cases = infectious.outbreaks(ph, persons, residents)
    finally:
        out.close()
    abuse = care.claims.abuse + ph.claims.abuse
    _ground_truth(
        out_dir,
        seed,
        residents,
        pop,
        persons,
        records,
        cases + outbreak_cases,
        found,
        abuse,
        care.split_admissions,
        out.counts,
    )
    return dict(sorted(out.counts.items()))


def _clear(out_dir: Path) -> None:
    """Remove the NDJSON and ground truth of an earlier run (nothing else)."""
    if not out_dir.exists():
        return
    for f in out_dir.glob("*.ndjson"):
        f.unlink()
    gt = out_dir / GROUND_TRUTH
    if gt.is_dir():
        for f in gt.iterdir():
            if f.suffix in (".csv", ".json"):
                f.unlink()


def _register(
    out: Output,
    rng: random.Random,
    persons: list[people.Person],
    reg: facilities.Registry,
    geo: Any,
    townships: Any,
    start: int,
) -> list[tuple[str, str, str, bool, str]]:
    """Primary Patient records, duplicates at other facilities, RelatedPersons and Coverages."""
    spec = load("registration")
    extra = spec["extra_records"]
    rows: list[tuple[str, str, str, bool, str]] = []  # patient, person, organization, primary, errors
    phones = {p.phone for p in persons if p.phone}
    mrn = 0
    for p in persons:
        p.patient = f"pat-{p.idx}"
    for p in persons:
        town = p.township
        primary = reg.primary[town.code]  # type: ignore[union-attr]
        mrn += 1
        base = people.patient_resource(p, p.patient, primary.org, primary.name, f"{mrn:010d}", geo)
        out.emit(base)
        rows.append((p.patient, p.pid, primary.org, True, ""))
        if rng.random() < spec["duplicate_share"]:
            count = rng.choices([e[0] for e in extra], weights=[e[1] for e in extra])[0]
            city = geo.city_of(town.code).code  # type: ignore[union-attr]
            options = [reg.county[town.parent], reg.county_tcm[town.parent], reg.city[city], reg.province[0]]  # type: ignore[union-attr]
            for fac in rng.sample(options, count):
                mrn += 1
                pid = out.new_id("pat-d")
                rec, errors = duplicates.make_record(rng, base, p, pid, fac.org, f"{mrn:010d}", geo, townships, phones)
                out.emit(rec)
                p.records[fac.org] = pid
                rows.append((pid, p.pid, fac.org, False, ";".join(errors)))
    for p in persons:
        if p.spouse is not None:
            out.emit(people.related_person(out, p, p.spouse, "WIFE" if p.spouse.sex == "female" else "HUSB", geo))
        if p.age < 18:
            for parent, code in ((p.mother, "MTH"), (p.father, "FTH")):
                if parent is not None:
                    out.emit(people.related_person(out, p, parent, code, geo))
        if p.insurance is not None:
            city = geo.city_of(p.township.code).code  # type: ignore[union-attr]
            payer = reg.payer[city]
            out.emit(people.coverage_resource(out, p, payer.org, payer.name, start - rng.randint(0, 3650)))
    return rows


def _ground_truth(
    out_dir: Path,
    seed: int,
    residents: int,
    pop: dict[str, Any],
    persons: list[people.Person],
    records: list[tuple[str, str, str, bool, str]],
    cases: list[infectious.Case],
    found: list[infectious.Outbreak],
    abuse: list[Any],
    splits: list[tuple[str, str, str, str, str, str]],
    counts: dict[str, int],
) -> None:
    gt = out_dir / GROUND_TRUTH
    gt.mkdir(parents=True, exist_ok=True)
    geo = jilin()
    with open(gt / "persons.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            [
                "person_id",
                "resident_id",
                "name",
                "sex",
                "birth_date",
                "death_date",
                "ethnicity",
                "household",
                "household_role",
                "county",
                "township",
                "insurance",
                "primary_patient",
                "chronic",
            ]
        )
        for p in persons:
            w.writerow(
                [
                    p.pid,
                    p.resident_id,
                    p.name.text if p.name else "",
                    p.sex,
                    day(p.birth),
                    day(p.death) if p.death else "",
                    p.ethnicity,
                    p.household,
                    p.role,
                    p.township.parent if p.township else "",
                    p.township.code if p.township else "",
                    p.insurance or "",
                    p.patient,
                    ";".join(d["icd"] for d, _ in p.chronic),
                ]
            )
    with open(gt / "patient-records.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["patient_id", "person_id", "organization", "primary", "errors"])
        for row in records:
            w.writerow([row[0], row[1], row[2], "true" if row[3] else "false", row[4]])
    with open(gt / "infectious-cases.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            [
                "condition_id",
                "encounter_id",
                "patient_id",
                "person_id",
                "disease",
                "icd10",
                "county",
                "township",
                "onset",
                "outbreak_id",
            ]
        )
        for c in cases:
            w.writerow(
                [
                    c.condition,
                    c.encounter,
                    c.patient,
                    c.person,
                    c.disease,
                    c.icd,
                    c.county,
                    c.township,
                    c.onset,
                    c.outbreak,
                ]
            )
    outbreaks = [
        {
            "id": o.id,
            "disease": o.disease,
            "icd10": o.icd,
            "display": o.display,
            "place": {
                "county": o.county,
                "county_name": o.county_name,
                "township": o.township,
                "township_name": o.township_name,
            },
            "start": o.start,
            "end": o.end,
            "size": o.size,
            "cases": o.cases,
        }
        for o in found
    ]
    (gt / "outbreaks.json").write_bytes(orjson.dumps(outbreaks, option=orjson.OPT_INDENT_2))
    with open(gt / "claims-abuse.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["claim_id", "pattern", "encounter_id", "patient_id", "person_id", "related_claim_id", "detail"])
        for a in abuse:
            w.writerow([a.claim, a.pattern, a.encounter, a.patient, a.person, a.related, a.detail])
        for first, first_claim, second, second_claim, patient, person in splits:
            w.writerow(
                [
                    second_claim,
                    "split_admission",
                    second,
                    patient,
                    person,
                    first_claim,
                    f"readmitted the day after discharge from {first}",
                ]
            )
    summary = {
        "seed": seed,
        "residents": residents,
        "as_of": pop["as_of"],
        "care_start": pop["care_start"],
        "province": "220000",
        "cities": [c.code for c in geo.cities],
        "counts": dict(sorted(counts.items())),
        "total": sum(counts.values()),
        "duplicates": sum(1 for r in records if not r[3]),
        "outbreaks": len(found),
        "claims_abuse": len(abuse) + len(splits),
    }
    (gt / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
