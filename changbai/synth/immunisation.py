"""Childhood vaccinations following China's national immunisation programme schedule, with the
coverage and delays of the data file; birth doses at the delivery hospital, the rest at the resident's
township or community vaccination clinic."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

from changbai.synth import systems
from changbai.synth.data import load
from changbai.synth.elements import coding, concept, day, instant, quantity, ref
from changbai.synth.facilities import Facility
from changbai.synth.output import Output
from changbai.synth.people import Person

MAX_AGE_YEARS = 7


def add_months(birth: int, months: int) -> int:
    b = date.fromordinal(birth)
    y, m = divmod(b.month - 1 + months, 12)
    d = min(b.day, 28)
    return date(b.year + y, m + 1, d).toordinal()


def vaccinate(
    out: Output, rng: random.Random, p: Person, clinic: Facility, birth_facility: Facility, as_of: int
) -> int:
    """Emit the Immunization resources of one child; returns how many."""
    if p.age >= MAX_AGE_YEARS:
        return 0
    spec = load("immunisation")
    coverage = spec["coverage"]
    delays = spec["delay_days"]
    n = 0
    for vaccine, dose, months in spec["schedule"]:
        if rng.random() >= coverage.get(f"{vaccine}#{dose}", coverage["default"]):
            continue
        due = p.birth if months == 0 else add_months(p.birth, months)
        if months == 0:
            when = p.birth + (0 if rng.random() < 0.9 else 1)
        else:
            _share, lo, hi = rng.choices(delays, weights=[d[0] for d in delays])[0]
            when = due + rng.randint(lo, hi)
        if when >= as_of or (p.death is not None and when >= p.death):
            continue
        fac = birth_facility if months == 0 else clinic
        v = spec["vaccines"][vaccine]
        codings = [coding(systems.NIP_VACCINE, vaccine, v["name"])]
        if v["cvx"]:
            codings.append(coding(systems.CVX, v["cvx"][0], v["cvx"][1]))
        res: dict[str, Any] = {
            "resourceType": "Immunization",
            "id": out.new_id("imm-"),
            "status": "completed",
            "vaccineCode": {"coding": codings, "text": v["name"]},
            "patient": ref("Patient", p.patient_at(fac.org)),
            "occurrenceDateTime": instant(when, rng.randint(8 * 60, 16 * 60)),
            "recorded": day(when),
            "primarySource": True,
            "location": ref("Location", fac.loc, fac.name),
            "lotNumber": f"{spec['lot_prefix']}{date.fromordinal(when).year % 100:02d}{rng.randint(1000, 9999)}",
        }
        if v["site"]:
            res["site"] = concept(systems.V3_SITE, v["site"], spec["sites"][v["site"]])
        res["route"] = concept(systems.V3_ROUTE, v["route"], spec["routes"][v["route"]])
        res["doseQuantity"] = quantity(v["dose_ml"], "mL")
        res["performer"] = [{"actor": ref("Organization", fac.org, fac.name)}]
        res["protocolApplied"] = [{"series": "国家免疫规划儿童免疫程序", "doseNumberPositiveInt": dose}]
        out.emit(res)
        n += 1
    return n
