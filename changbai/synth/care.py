"""Care over the window: encounters at the facility level a condition calls for, referrals up and down,
conditions (ICD-10), observations and lab panels (LOINC, UCUM), prescriptions and dispenses, appointments,
family-doctor contracts and claims. One :class:`Care` per run; :meth:`Care.person` does one resident."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from changbai.synth import systems
from changbai.synth.claims import Claims, Item, drug_item, lab_item, service_item
from changbai.synth.data import band_value, load
from changbai.synth.elements import coding, concept, day, icd10, instant, quantity, ref
from changbai.synth.facilities import Facility, Registry, Staff
from changbai.synth.geography import Map
from changbai.synth.people import Person

_CLASS = {"AMB": "ambulatory", "IMP": "inpatient encounter", "EMER": "emergency"}
_CAT_DISPLAY = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}
_VISIT_MINUTES = (8 * 60, 16 * 60 + 30)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


@dataclass(slots=True)
class Visit:
    """An encounter being built: resources attach to it, and it is written (with its claim) at the end."""

    id: str
    person: Person
    patient: str
    fac: Facility
    staff: Staff | None
    start: int
    end: int
    minute: int
    cls: str
    reasons: list[dict[str, Any]] = field(default_factory=list)
    conditions: list[tuple[str, str]] = field(default_factory=list)  # (Condition id, ICD-10 code)
    items: list[Item] = field(default_factory=list)
    based_on: str | None = None
    appointment: str | None = None
    admit_source: str | None = None
    disposition: str = "home"
    abuse: bool = True


class Care:
    def __init__(
        self, out: Any, rng: random.Random, reg: Registry, geo: Map, as_of: int, start: int, claims: Claims
    ) -> None:
        self.out, self.rng, self.reg, self.geo = out, rng, reg, geo
        self.as_of, self.start = as_of, start
        self.claims = claims
        self.clinical = load("clinical")
        self.drugs = self.clinical["drugs"]
        #: (first encounter, its claim, readmission, its claim, patient, person) of each split admission
        self.split_admissions: list[tuple[str, str, str, str, str, str]] = []
        #: Where each child born in the window was delivered (the birth doses of vaccines are given there).
        self.birth_facility: dict[int, Facility] = {}

    # ---- building blocks -------------------------------------------------------------------------
    def facility(self, p: Person, level: str) -> Facility:
        town = p.township
        assert town is not None
        if level == "village" and town.urban:
            level = "primary"
        fac = self.reg.for_care(level, town, self.geo.city_of(town.code).code)
        if level == "county" and self.rng.random() < 0.15:
            fac = self.reg.county_tcm[town.parent]
        return fac

    def visit(
        self, p: Person, fac: Facility, d: int, cls: str = "AMB", stay: int = 0, staff_kind: str = "doctor"
    ) -> Visit:
        minute = self.rng.randint(*_VISIT_MINUTES)
        end = min(d + stay, self.as_of - 1)
        if p.death is not None and end > p.death:
            end = p.death
        v = Visit(
            self.out.new_id("enc-"), p, p.patient_at(fac.org), fac, fac.pick(self.rng, staff_kind), d, end, minute, cls
        )
        consult = self.clinical["costs"]["consultation"].get(fac.care_level, 10)
        v.items.append(service_item("consultation", "诊查费", 1, consult))
        if cls == "IMP":
            days = max(1, end - d)
            costs = self.clinical["costs"]
            lvl = fac.care_level if fac.care_level in costs["bed_day"] else "county"
            v.items.append(service_item("bed-day", "床位费", days, costs["bed_day"][lvl]))
            v.items.append(service_item("nursing-day", "护理费", days, costs["nursing_day"][lvl]))
            mean = costs["inpatient_treatment_mean"][lvl]
            v.items.append(
                service_item("treatment", "治疗费", 1, round(self.rng.lognormvariate(math.log(mean), 0.5), 2))
            )
        return v

    def when(self, v: Visit, offset_minutes: int = 0) -> str:
        return instant(v.start, min(v.minute + offset_minutes, 1439))

    def condition(
        self,
        v: Visit | None,
        p: Person,
        icd: str,
        display: str,
        onset: int,
        *,
        category: str,
        resolved: int | None = None,
        patient: str | None = None,
        recorded: int | None = None,
    ) -> str:
        cid = self.out.new_id("cond-")
        res: dict[str, Any] = {
            "resourceType": "Condition",
            "id": cid,
            "clinicalStatus": concept(
                systems.CONDITION_CLINICAL, "resolved" if resolved else "active", "Resolved" if resolved else "Active"
            ),
            "verificationStatus": concept(systems.CONDITION_VERIFICATION, "confirmed", "Confirmed"),
            "category": [
                concept(
                    systems.CONDITION_CATEGORY,
                    category,
                    "Encounter Diagnosis" if category == "encounter-diagnosis" else "Problem List Item",
                )
            ],
            "code": icd10(icd, display),
            "subject": ref("Patient", patient or (v.patient if v else p.patient)),
        }
        if v is not None:
            res["encounter"] = ref("Encounter", v.id)
        res["onsetDateTime"] = day(onset)
        if resolved:
            res["abatementDateTime"] = day(resolved)
        res["recordedDate"] = day(recorded if recorded is not None else (v.start if v else onset))
        if v is not None and v.staff is not None:
            res["recorder"] = ref("PractitionerRole", v.staff.role)
        self.out.emit(res)
        if v is not None:
            v.conditions.append((cid, icd))
            v.reasons.append(icd10(icd, display))
        return cid

    def observation(self, v: Visit, key: str, value: float | tuple[float, float]) -> str:
        o = self.clinical["observations"][key]
        oid = self.out.new_id("obs-")
        res: dict[str, Any] = {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "category": [concept(systems.OBSERVATION_CATEGORY, o["category"], _CAT_DISPLAY[o["category"]])],
            "code": {"coding": [coding(systems.LOINC, o["loinc"], o["display"])], "text": o["text"]},
            "subject": ref("Patient", v.patient),
            "encounter": ref("Encounter", v.id),
            "effectiveDateTime": self.when(v, 5),
        }
        if v.staff is not None:
            res["performer"] = [ref("PractitionerRole", v.staff.role)]
        if isinstance(value, tuple):
            res["component"] = [
                {
                    "code": {"coding": [coding(systems.LOINC, c[0], c[1])], "text": c[2]},
                    "valueQuantity": quantity(val, o["unit"]),
                }
                for c, val in zip(o["components"], value, strict=True)
            ]
        else:
            res["valueQuantity"] = quantity(value, o["unit"])
        self.out.emit(res)
        if "price" in o:
            v.items.append(lab_item(o["loinc"], o["display"], o["text"], o["price"]))
        return oid

    def panel(self, v: Visit, key: str, values: list[float]) -> str:
        panel = self.clinical["panels"][key]
        when = self.when(v, 20)
        results = []
        for (loinc, display, text, unit), value in zip(panel["results"], values, strict=True):
            oid = self.out.new_id("obs-")
            self.out.emit(
                {
                    "resourceType": "Observation",
                    "id": oid,
                    "status": "final",
                    "category": [concept(systems.OBSERVATION_CATEGORY, "laboratory", "Laboratory")],
                    "code": {"coding": [coding(systems.LOINC, loinc, display)], "text": text},
                    "subject": ref("Patient", v.patient),
                    "encounter": ref("Encounter", v.id),
                    "effectiveDateTime": when,
                    "valueQuantity": quantity(value, unit),
                }
            )
            results.append(ref("Observation", oid))
        rid = self.out.new_id("dr-")
        self.out.emit(
            {
                "resourceType": "DiagnosticReport",
                "id": rid,
                "status": "final",
                "category": [concept(systems.DIAGNOSTIC_SERVICE, "LAB", "Laboratory")],
                "code": {"coding": [coding(systems.LOINC, panel["loinc"], panel["display"])], "text": panel["text"]},
                "subject": ref("Patient", v.patient),
                "encounter": ref("Encounter", v.id),
                "effectiveDateTime": when,
                "issued": instant(v.start, min(v.minute + 120, 1439)),
                "performer": [ref("Organization", v.fac.org, v.fac.name)],
                "result": results,
            }
        )
        v.items.append(lab_item(panel["loinc"], panel["display"], panel["text"], panel["price"]))
        return rid

    def prescribe(self, v: Visit, code: str, reason: str | None, days: int | None = None) -> None:
        drug = self.drugs[code]
        days = days or drug.get("days", self.clinical["chronic_supply_days"])
        unit = drug.get("unit", "片")
        ucode = self.clinical["unit_codes"][unit]
        qty = max(1, math.ceil(drug["daily"] * days))
        med = {"coding": [coding(systems.ATC, code, drug["atc"])], "text": f"{drug['name']} {drug['strength']}"}
        per_day = max(1, round(drug["daily"]))
        if drug["daily"] >= 1:
            dosage = {
                "text": f"每日{per_day}次，每次1{unit}",
                "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": quantity(1, unit, ucode)}],
            }
        else:
            dosage = {
                "text": "每日1次，皮下注射10单位",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            }
        mid = self.out.new_id("mr-")
        authored = self.when(v, 15)
        res: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": mid,
            "status": "completed",
            "intent": "order",
            "medicationCodeableConcept": med,
            "subject": ref("Patient", v.patient),
            "encounter": ref("Encounter", v.id),
            "authoredOn": authored,
        }
        if v.staff is not None:
            res["requester"] = ref("PractitionerRole", v.staff.role)
        if reason:
            res["reasonReference"] = [ref("Condition", reason)]
        res["dosageInstruction"] = [dosage]
        res["dispenseRequest"] = {
            "quantity": quantity(qty, unit, ucode),
            "expectedSupplyDuration": {"value": days, "unit": "d", "system": systems.UCUM, "code": "d"},
        }
        self.out.emit(res)
        if self.rng.random() < self.clinical["retail_pharmacy_share"] and v.cls == "AMB":
            pharmacies = self.reg.pharmacies.get(v.fac.place.code[:6])
            fac = pharmacies[0] if pharmacies else v.fac
        else:
            fac = v.fac
        pharmacist = fac.pick(self.rng, "pharmacist")
        disp: dict[str, Any] = {
            "resourceType": "MedicationDispense",
            "id": self.out.new_id("md-"),
            "status": "completed",
            "medicationCodeableConcept": med,
            "subject": ref("Patient", v.patient),
            "context": ref("Encounter", v.id),
            "performer": [
                {
                    "actor": ref("PractitionerRole", pharmacist.role)
                    if pharmacist and pharmacist.kind == "pharmacist"
                    else ref("Organization", fac.org, fac.name)
                }
            ],
            "location": ref("Location", fac.loc),
            "authorizingPrescription": [ref("MedicationRequest", mid)],
            "quantity": quantity(qty, unit, ucode),
            "daysSupply": {"value": days, "unit": "d", "system": systems.UCUM, "code": "d"},
            "whenHandedOver": self.when(v, 40),
        }
        self.out.emit(disp)
        v.items.append(drug_item(code, drug, qty))

    def referral(self, v: Visit, target: Facility, reason: str | None, on: int | None = None) -> str:
        sid = self.out.new_id("sr-")
        res: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": sid,
            "status": "completed",
            "intent": "order",
            "category": [concept(systems.SNOMED, "3457005", "Patient referral", "转诊")],
            "priority": "routine",
            "subject": ref("Patient", v.patient),
            "encounter": ref("Encounter", v.id),
            "authoredOn": self.when(v, 30) if on is None else instant(on, 9 * 60),
        }
        if v.staff is not None:
            res["requester"] = ref("PractitionerRole", v.staff.role)
        res["performer"] = [ref("Organization", target.org, target.name)]
        if reason:
            res["reasonReference"] = [ref("Condition", reason)]
        self.out.emit(res)
        return sid

    def appointment(self, p: Person, fac: Facility, d: int, minute: int, status: str, staff: Staff | None) -> str:
        aid = self.out.new_id("appt-")
        participants = [{"actor": ref("Patient", p.patient_at(fac.org)), "required": "required", "status": "accepted"}]
        if staff is not None:
            participants.append(
                {"actor": ref("PractitionerRole", staff.role), "required": "required", "status": "accepted"}
            )
        participants.append({"actor": ref("Location", fac.loc), "required": "required", "status": "accepted"})
        created = max(d - self.rng.randint(1, 14), p.birth)
        self.out.emit(
            {
                "resourceType": "Appointment",
                "id": aid,
                "status": status,
                "start": instant(d, minute),
                "end": instant(d, min(minute + 15, 1439)),
                "created": day(created),
                "participant": participants,
            }
        )
        return aid

    def finish(self, v: Visit) -> str | None:
        """Write the encounter and its claim; return the claim id (None for an uninsured resident)."""
        p = v.person
        res: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": v.id,
            "status": "finished",
            "class": coding(systems.V3_ACTCODE, v.cls, _CLASS[v.cls]),
            "subject": ref("Patient", v.patient),
        }
        if v.based_on:
            res["basedOn"] = [ref("ServiceRequest", v.based_on)]
        if v.staff is not None:
            res["participant"] = [{"individual": ref("PractitionerRole", v.staff.role, v.staff.name)}]
        if v.appointment:
            res["appointment"] = [ref("Appointment", v.appointment)]
        end_minute = min(v.minute + 20, 1439) if v.end == v.start else v.minute
        res["period"] = {"start": instant(v.start, v.minute), "end": instant(v.end, end_minute)}
        if v.reasons:
            res["reasonCode"] = v.reasons
        if v.conditions:
            use = ("AD", "Admission diagnosis") if v.cls == "IMP" else ("CC", "Chief complaint")
            res["diagnosis"] = [
                {"condition": ref("Condition", c), "use": concept(systems.DIAGNOSIS_ROLE, *use), "rank": n}
                for n, (c, _) in enumerate(v.conditions, start=1)
            ]
        if v.cls == "IMP":
            src = v.admit_source or "outp"
            res["hospitalization"] = {
                "admitSource": concept(systems.ADMIT_SOURCE, src, _ADMIT[src]),
                "dischargeDisposition": concept(
                    systems.DISCHARGE_DISPOSITION, v.disposition, _DISPOSITION[v.disposition]
                ),
            }
        res["location"] = [{"location": ref("Location", v.fac.loc, v.fac.name)}]
        res["serviceProvider"] = ref("Organization", v.fac.org, v.fac.name)
        self.out.emit(res)
        if p.coverage is None:
            return None
        return self.claims.emit(
            patient=v.patient,
            person=p.pid,
            coverage=p.coverage,
            encounter=v.id,
            org=v.fac.org,
            org_name=v.fac.name,
            loc=v.fac.loc,
            inpatient=v.cls == "IMP",
            start=v.start,
            end=v.end,
            minute=v.minute,
            diagnoses=[c for c, _ in v.conditions],
            items=v.items,
            icd_codes=[i for _, i in v.conditions],
            allow_abuse=v.abuse,
        )

    # ---- a resident's years -----------------------------------------------------------------------
    def window(self, p: Person) -> tuple[int, int]:
        lo = max(self.start, p.birth)
        hi = self.as_of - 1 if p.death is None else p.death - 1
        return lo, hi

    def person(self, p: Person) -> None:
        lo, hi = self.window(p)
        if hi < lo:
            return
        self.chronic_care(p, lo, hi)
        self.acute_care(p, lo, hi)
        self.health_check(p, lo, hi)
        self.maternity(p, lo, hi)

    def assign_chronic(self, p: Person) -> None:
        """Which chronic diseases a resident has been diagnosed with, and when (before or in the window)."""
        rng = self.rng
        for d in self.clinical["chronic"]:
            if p.age < d["min_age"]:
                continue
            if rng.random() >= band_value(d["prevalence"], p.age) * d["diagnosed"]:
                continue
            lo, hi = self.window(p)
            earliest = p.birth + d["min_age"] * 365
            if rng.random() < self.clinical["chronic_new_in_window"] and hi > max(lo, earliest):
                onset = rng.randint(max(lo, earliest), hi)
            else:
                onset = max(earliest, self.start - rng.randint(30, 15 * 365))
                if onset >= self.start:
                    onset = self.start - 1
            p.chronic.append((d, onset))

    def chronic_care(self, p: Person, lo: int, hi: int) -> None:
        if not p.chronic:
            return
        rng = self.rng
        fac = self.facility(p, "primary")
        conds: list[tuple[dict[str, Any], str, str]] = []  # (definition, condition id, drug)
        first = max(lo, min(onset for _, onset in p.chronic))
        pending = []
        for d, onset in p.chronic:
            drug = rng.choice(d["drugs"]) if d["drugs"] else ""
            if onset < self.start:
                cid = self.condition(None, p, d["icd"], d["display"], onset, category="problem-list-item")
                conds.append((d, cid, drug))
            else:
                pending.append((d, onset, drug))
        per_year = max(d["followups_per_year"] for d, _ in p.chronic)
        step = 365 // per_year
        visit_day = first + rng.randint(0, step - 1)
        n = 0
        bp = _bp_baseline(rng, p)
        while visit_day <= hi:
            v = self.visit(p, fac, visit_day, staff_kind="family_doctor")
            for d, onset, drug in list(pending):
                if onset <= visit_day:
                    cid = self.condition(v, p, d["icd"], d["display"], onset, category="problem-list-item")
                    conds.append((d, cid, drug))
                    pending.remove((d, onset, drug))
            keys = {d["key"] for d, _, _ in conds}
            if not keys:
                visit_day += step
                continue
            if not v.conditions:
                v.reasons.extend(icd10(d["icd"], d["display"]) for d, _, _ in conds)
                v.conditions.extend((cid, d["icd"]) for d, cid, _ in conds)
            if keys & {"hypertension", "stroke_sequelae", "chd", "diabetes"}:
                noise = rng.gauss(0, 7)
                self.observation(v, "bp", (round(bp[0] + noise), round(bp[1] + noise * 0.6)))
            if "diabetes" in keys:
                self.observation(v, "glucose", round(max(4.0, rng.gauss(7.8, 1.8)), 1))
                if n % 2 == 0:
                    self.observation(v, "hba1c", round(max(5.0, rng.gauss(7.3, 1.1)), 1))
            if keys & {"hyperlipidaemia", "chd"} and n % per_year == 0:
                self.panel(v, "lipids", _lipids(rng, high=True))
            for _d, cid, drug in conds:
                if drug:
                    self.prescribe(v, drug, cid, days=84 if per_year >= 4 else 30)
            self.finish(v)
            n += 1
            visit_day += step + rng.randint(-10, 10)
        if conds and rng.random() < 1 - (1 - self.clinical["chronic_admission_per_year"]) ** ((hi - lo) / 365):
            d, cid, drug = rng.choice(conds)
            onset = next(o for c, o in p.chronic if c is d)
            when = rng.randint(max(lo, onset), max(lo, onset, hi - 1))
            hospital = self.facility(p, "county")
            based_on = source = None
            if rng.random() < self.clinical["chronic_admission_referred"] and when + 1 <= hi:
                # the family doctor sends the resident up to the county hospital (upward referral)
                r = self.visit(p, fac, when, staff_kind="family_doctor")
                r.conditions.append((cid, d["icd"]))
                r.reasons.append(icd10(d["icd"], d["display"]))
                based_on, source = self.referral(r, hospital, cid), "gp"
                self.finish(r)
                when += 1
            v = self.admission(
                p,
                hospital,
                when,
                d["icd"],
                d["display"],
                drug,
                labs=["cbc", "creatinine"],
                existing=cid,
                based_on=based_on,
                source=source,
            )
            if rng.random() < self.clinical["chronic_discharge_referred_down"]:
                self.step_down(p, v, cid, [drug] if drug else [], None)

    def step_down(self, p: Person, v: Visit, cid: str, drugs: list[str], new: tuple[str, str] | None) -> None:
        """Downward referral after a hospital stay: follow-up at the resident's own primary facility."""
        if v.disposition != "home":
            return
        back = self.facility(p, "primary")
        follow = v.end + self.rng.randint(7, 21)
        if follow >= (p.death or self.as_of):
            return
        sid = self.referral(v, back, cid, on=v.end)
        f = self.visit(p, back, follow, staff_kind="family_doctor")
        f.based_on = sid
        if new is not None:
            cid = self.condition(f, p, new[0], new[1], v.end, category="problem-list-item")
        else:
            f.conditions.append((cid, v.conditions[0][1]))
            f.reasons.append(v.reasons[0])
        for drug in drugs:
            self.prescribe(f, drug, cid, days=30)
        self.finish(f)

    def admission(
        self,
        p: Person,
        fac: Facility,
        when: int,
        icd: str,
        display: str,
        drug: str,
        labs: list[str],
        existing: str | None = None,
        based_on: str | None = None,
        source: str | None = None,
    ) -> Visit:
        """An inpatient stay; sometimes billed as two (a split admission, 分解住院)."""
        rng = self.rng
        lvl = fac.care_level if fac.care_level in self.clinical["costs"]["length_of_stay"] else "county"
        stay = max(2, round(rng.gauss(self.clinical["costs"]["length_of_stay"][lvl], 2.5)))
        split = stay >= 6 and p.coverage is not None and rng.random() < self.clinical["claims_abuse"]["split_admission"]
        first_stay = stay // 2 if split else stay
        v = self.visit(p, fac, when, "IMP", first_stay)
        v.based_on, v.admit_source = based_on, source
        if p.death is not None and v.end >= p.death - 1:
            v.disposition = "exp"
        if existing:
            v.conditions.append((existing, icd))
            v.reasons.append(icd10(icd, display))
        else:
            self.condition(
                v,
                p,
                icd,
                display,
                when,
                category="encounter-diagnosis",
                resolved=v.end if v.end < self.as_of - 1 else None,
            )
        for lab in labs:
            self.panel(v, lab, _panel_values(rng, lab, p))
        if drug:
            self.prescribe(v, drug, v.conditions[0][0], days=max(1, v.end - v.start))
        if split:
            v.abuse = False
        first_claim = self.finish(v)
        if split and v.end + 1 < (p.death or self.as_of) - 1 and v.end + 1 + stay - first_stay < self.as_of:
            v2 = self.visit(p, fac, v.end + 1, "IMP", stay - first_stay)
            v2.abuse = False
            v2.conditions.append(v.conditions[0])
            v2.reasons.append(icd10(icd, display))
            v2.admit_source = "outp"
            second_claim = self.finish(v2)
            self.split_admissions.append((v.id, first_claim or "", v2.id, second_claim or "", v2.patient, p.pid))
        return v

    def acute_care(self, p: Person, lo: int, hi: int) -> None:
        rng = self.rng
        years = (hi - lo + 1) / 365.25
        scale = self.clinical["encounter_rate_scale"]
        for d in self.clinical["acute"]:
            if d.get("sex") and d["sex"] != p.sex:
                continue
            for _ in range(poisson(rng, band_value(d["rate"], p.age) * years * scale)):
                when = rng.randint(lo, hi)
                self.episode(p, d, when)

    def episode(self, p: Person, d: dict[str, Any], when: int) -> None:
        rng = self.rng
        levels = d["levels"]
        level = rng.choices(list(levels), weights=list(levels.values()))[0]
        fac = self.facility(p, level)
        drugs = [c for c, share in zip(d["drugs"], d["drug_share"], strict=True) if rng.random() < share]
        if rng.random() < d["inpatient"]:
            if level in ("village", "primary") and rng.random() < d.get("refer_up", 0):
                v = self.visit(p, fac, when)
                cid = self.condition(v, p, d["icd"], d["display"], when, category="encounter-diagnosis")
                target = self.facility(p, "county")
                sid = self.referral(v, target, cid)
                self.finish(v)
                if when + 1 < (p.death or self.as_of):
                    self.admission(
                        p,
                        target,
                        when + 1,
                        d["icd"],
                        d["display"],
                        drugs[0] if drugs else "",
                        d["labs"],
                        existing=cid,
                        based_on=sid,
                        source="gp",
                    )
                return
            if level in ("village", "primary") and d.get("refer_down") is None:
                fac = self.facility(p, "county") if d["inpatient"] < 1 else fac
            existing = source = None
            if fac.care_level in ("county", "city", "province") and rng.random() < d.get("emergency", 0):
                # arrives at the emergency department, then is admitted the same day
                e = self.visit(p, fac, when, "EMER")
                existing = self.condition(e, p, d["icd"], d["display"], when, category="encounter-diagnosis")
                self.finish(e)
                source = "emd"
            v = self.admission(
                p, fac, when, d["icd"], d["display"], drugs[0] if drugs else "", d["labs"], existing, source=source
            )
            if d.get("refer_down") and rng.random() < d["refer_down"]:
                self.step_down(p, v, v.conditions[0][0], drugs, ("I69.3", "脑梗死后遗症"))
            return
        v = self.visit(p, fac, when, staff_kind="doctor")
        if (
            fac.care_level in ("county", "city", "province")
            and rng.random() < self.clinical["booked_share"][fac.care_level]
        ):
            v.appointment = self.appointment(p, fac, when, v.minute, "fulfilled", v.staff)
        cid = self.condition(
            v,
            p,
            d["icd"],
            d["display"],
            when,
            category="encounter-diagnosis",
            resolved=min(when + 7, self.as_of - 1) if when + 7 < self.as_of else None,
        )
        for lab in d["labs"]:
            self.panel(v, lab, _panel_values(rng, lab, p, infection=True))
        for drug in drugs:
            self.prescribe(v, drug, cid)
        self.finish(v)
        if fac.care_level in ("county", "city", "province") and rng.random() < self.clinical["noshow_share"]:
            later = when + rng.randint(3, 20)
            if later < (p.death or self.as_of):
                self.appointment(p, fac, later, rng.randint(*_VISIT_MINUTES), "noshow", v.staff)

    def health_check(self, p: Person, lo: int, hi: int) -> None:
        """The yearly health check of residents 65 and older (basic public health service)."""
        spec = self.clinical["elderly_health_check"]
        if p.age < spec["min_age"]:
            return
        rng = self.rng
        fac = self.facility(p, "primary")
        bp = _bp_baseline(rng, p)
        height = rng.gauss(168 if p.sex == "male" else 157, 5.5) - 2
        bmi = rng.gauss(24.6, 3.3)
        year_start = lo
        while year_start <= hi:
            if rng.random() < spec["participation"]:
                when = min(hi, year_start + rng.randint(60, 300))
                v = self.visit(p, fac, when, staff_kind="family_doctor")
                v.reasons.append(concept(systems.SNOMED, "268565007", "Adult health examination", "老年人健康体检"))
                noise = rng.gauss(0, 7)
                self.observation(v, "bp", (round(bp[0] + noise), round(bp[1] + noise * 0.6)))
                w = bmi * (height / 100) ** 2
                self.observation(v, "height", round(height, 1))
                self.observation(v, "weight", round(w, 1))
                self.observation(v, "bmi", round(bmi, 1))
                diabetic = any(d["key"] == "diabetes" for d, _ in p.chronic)
                self.observation(
                    v, "glucose", round(max(3.9, rng.gauss(7.8 if diabetic else 5.3, 1.5 if diabetic else 0.5)), 1)
                )
                self.panel(v, "lipids", _lipids(rng, high=False))
                self.panel(v, "cbc", _panel_values(rng, "cbc", p))
                self.finish(v)
            year_start += 365

    def maternity(self, p: Person, lo: int, hi: int) -> None:
        if p.sex != "female" or not p.children:
            return
        mat = self.clinical["maternity"]
        rng = self.rng
        for child in p.children:
            birth = child.birth
            if not (self.start <= birth <= hi):
                continue
            conception = birth - 273
            preg = self.condition(
                None,
                p,
                mat["antenatal"]["icd"],
                mat["antenatal"]["display"],
                conception + 42,
                category="problem-list-item",
                resolved=birth,
                recorded=max(conception + 84, lo),
            )
            for week in (12, 16, 24, 32, 37):
                d = conception + week * 7
                if d < lo or d >= birth:
                    continue
                fac = self.facility(p, "primary" if week == 12 else "county")
                v = self.visit(p, fac, d)
                v.conditions.append((preg, mat["antenatal"]["icd"]))
                v.reasons.append(icd10(mat["antenatal"]["icd"], mat["antenatal"]["display"]))
                if week in (12, 32):
                    self.panel(v, "cbc", _panel_values(rng, "cbc", p))
                if week == 12:
                    for drug in mat["antenatal"]["drugs"]:
                        self.prescribe(v, drug, preg, days=90)
                self.finish(v)
            levels = mat["delivery_levels"]
            level = rng.choices(list(levels), weights=list(levels.values()))[0]
            city = self.geo.city_of(p.township.code).code  # type: ignore[union-attr]
            fac = self.reg.city_mch[city] if level == "city" and rng.random() < 0.5 else self.facility(p, level)
            kind = rng.choices(mat["delivery"], weights=[k["share"] for k in mat["delivery"]])[0]
            v = self.visit(p, fac, birth, "IMP", kind["stay"])
            self.condition(
                v,
                p,
                kind["icd"],
                kind["display"],
                birth,
                category="encounter-diagnosis",
                resolved=v.end if v.end < self.as_of else None,
            )
            self.condition(
                v,
                p,
                "Z37.0",
                "单胎活产",
                birth,
                category="encounter-diagnosis",
                resolved=v.end if v.end < self.as_of else None,
            )
            self.panel(v, "cbc", _panel_values(rng, "cbc", p))
            self.finish(v)
            self.birth_facility[child.idx] = fac

    def contract(self, p: Person) -> None:
        """A family-doctor contract (家庭医生签约) as a CareTeam: the resident, their family doctor and nurse."""
        spec = load("population")["family_doctor_contract"]
        rng = self.rng
        if p.age >= 65:
            share = spec["elderly_65"]
        elif p.chronic:
            share = spec["chronic"]
        elif p.age <= 6:
            share = spec["child_0_6"]
        else:
            share = spec["general"]
        if rng.random() >= share:
            return
        fac = self.facility(p, "primary")
        start = self.as_of - rng.randint(30, 330)
        if start < p.birth:
            return
        end = start + 364
        status = "active"
        if p.death is not None and p.death <= start:
            return
        if p.death is not None and p.death < end:
            end, status = p.death, "inactive"
        participants = []
        doctor = fac.pick(rng, "family_doctor")
        if doctor is not None:
            participants.append(
                {
                    "role": [concept(systems.STAFF_ROLE, "family-doctor", "家庭医生")],
                    "member": ref("PractitionerRole", doctor.role, doctor.name),
                    "onBehalfOf": ref("Organization", fac.org, fac.name),
                }
            )
        nurse = fac.pick(rng, "nurse")
        if nurse is not None and nurse.kind == "nurse":
            participants.append(
                {
                    "role": [concept(systems.STAFF_ROLE, "nurse", "护士")],
                    "member": ref("PractitionerRole", nurse.role, nurse.name),
                }
            )
        team: dict[str, Any] = {
            "resourceType": "CareTeam",
            "id": self.out.new_id("ct-"),
            "status": status,
            "category": [concept(systems.LOINC, "LA28865-6", "Longitudinal care-coordination focused care team")],
            "name": "家庭医生签约服务团队",
            "subject": ref("Patient", p.patient),
            "period": {"start": day(start), "end": day(end)},
            "participant": participants,
            "managingOrganization": [ref("Organization", fac.org, fac.name)],
        }
        self.out.emit(team)
        if status == "active" and p.chronic:
            nxt = self.as_of + rng.randint(1, 60)
            self.appointment(p, fac, nxt, rng.randint(*_VISIT_MINUTES), "booked", doctor)


_ADMIT = {
    "outp": "From outpatient department",
    "gp": "General Practitioner referral",
    "emd": "From accident/emergency department",
}
_DISPOSITION = {"home": "Home", "exp": "Expired"}


def _bp_baseline(rng: random.Random, p: Person) -> tuple[float, float]:
    hypertensive = any(d["key"] == "hypertension" for d, _ in p.chronic)
    if hypertensive:
        return rng.gauss(140, 12), rng.gauss(86, 8)
    return rng.gauss(112 + 0.35 * p.age, 10), rng.gauss(72 + 0.1 * p.age, 7)


def _lipids(rng: random.Random, high: bool) -> list[float]:
    shift = 0.7 if high else 0.0
    return [
        round(max(2.5, rng.gauss(4.8 + shift, 0.9)), 2),
        round(max(0.4, rng.lognormvariate(0.35 + shift / 3, 0.45)), 2),
        round(max(1.0, rng.gauss(2.9 + shift * 0.7, 0.8)), 2),
        round(max(0.6, rng.gauss(1.3, 0.3)), 2),
    ]


def _panel_values(rng: random.Random, key: str, p: Person, infection: bool = False) -> list[float]:
    if key == "cbc":
        hb = rng.gauss(145 if p.sex == "male" else 128, 11)
        wbc = rng.gauss(11.0, 3.0) if infection else rng.gauss(6.5, 1.5)
        return [round(max(2.0, wbc), 1), round(max(70.0, hb)), round(max(60.0, rng.gauss(230, 50)))]
    if key == "lipids":
        return _lipids(rng, high=False)
    if key == "creatinine":
        return [round(max(30.0, rng.gauss(80 if p.sex == "male" else 62, 14)))]
    raise KeyError(key)
