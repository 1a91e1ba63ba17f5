"""Insurance claims (Claim, costs in CNY) for encounters of insured residents, with injected abuse
patterns whose ground truth is kept: duplicate billing, drugs not matching the diagnosis, quantities
beyond what was dispensed. Split admissions are made by the care generator (two encounters)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from changbai.synth import systems
from changbai.synth.data import load
from changbai.synth.elements import coding, day, instant, money, ref
from changbai.synth.output import Output


@dataclass(slots=True)
class Item:
    product: dict[str, Any]  # CodeableConcept
    quantity: float
    price: float
    drug: str | None = None  # ATC code when the item is a drug


@dataclass(slots=True)
class AbuseCase:
    claim: str
    pattern: str
    encounter: str
    patient: str
    person: str
    related: str = ""
    detail: str = ""


@dataclass(slots=True)
class Claims:
    out: Output
    rng: random.Random
    abuse: list[AbuseCase] = field(default_factory=list)

    def emit(
        self,
        *,
        patient: str,
        person: str,
        coverage: str,
        encounter: str,
        org: str,
        org_name: str,
        loc: str,
        inpatient: bool,
        start: int,
        end: int,
        minute: int,
        diagnoses: list[str],
        items: list[Item],
        icd_codes: list[str],
        allow_abuse: bool = True,
    ) -> str:
        spec = load("clinical")["claims_abuse"]
        rng = self.rng
        cid = self.out.new_id("claim-")
        pattern = None
        if allow_abuse:
            r = rng.random()
            if r < spec["drug_not_matching_diagnosis"]:
                code = rng.choice([c for c in spec["mismatch_drugs"] if not _treats(c, icd_codes)] or ["A10AE04"])
                drug = load("clinical")["drugs"][code]
                items = [*items, drug_item(code, drug, drug.get("days", 30) * drug["daily"])]
                pattern = ("drug_not_matching_diagnosis", code)
            elif r < spec["drug_not_matching_diagnosis"] + spec["over_quantity"]:
                drugs = [i for i, it in enumerate(items) if it.drug]
                if drugs:
                    k = rng.choice(drugs)
                    it = items[k]
                    factor = rng.randint(*spec["over_quantity_factor"])
                    items = list(items)
                    items[k] = Item(it.product, it.quantity * factor, it.price, it.drug)
                    pattern = ("over_quantity", f"{it.drug} x{factor}")
        res = self._resource(
            cid, patient, coverage, encounter, org, org_name, loc, inpatient, start, end, minute, diagnoses, items
        )
        self.out.emit(res)
        if pattern is not None:
            self.abuse.append(AbuseCase(cid, pattern[0], encounter, patient, person, "", pattern[1]))
        if allow_abuse and rng.random() < spec["duplicate_billing"]:
            dup = self.out.new_id("claim-")
            later = end + rng.randint(0, 3)
            self.out.emit(
                self._resource(
                    dup,
                    patient,
                    coverage,
                    encounter,
                    org,
                    org_name,
                    loc,
                    inpatient,
                    start,
                    end,
                    minute,
                    diagnoses,
                    items,
                    created=later,
                )
            )
            self.abuse.append(
                AbuseCase(dup, "duplicate_billing", encounter, patient, person, cid, "same items billed again")
            )
        return cid

    def _resource(
        self,
        cid: str,
        patient: str,
        coverage: str,
        encounter: str,
        org: str,
        org_name: str,
        loc: str,
        inpatient: bool,
        start: int,
        end: int,
        minute: int,
        diagnoses: list[str],
        items: list[Item],
        created: int | None = None,
    ) -> dict[str, Any]:
        enc_ref = [ref("Encounter", encounter)]
        lines = []
        total = 0.0
        served = day(start)
        for n, it in enumerate(items, start=1):
            net = round(it.quantity * it.price, 2)
            total += net
            lines.append(
                {
                    "sequence": n,
                    "productOrService": it.product,
                    "servicedDate": served,
                    "quantity": {"value": it.quantity},
                    "unitPrice": money(it.price),
                    "net": money(net),
                    "encounter": enc_ref,
                }
            )
        kind = "institutional" if inpatient else "professional"
        res: dict[str, Any] = {
            "resourceType": "Claim",
            "id": cid,
            "status": "active",
            "type": {"coding": [coding(systems.CLAIM_TYPE, kind, kind.capitalize())]},
            "use": "claim",
            "patient": ref("Patient", patient),
            "billablePeriod": {"start": served, "end": day(end)},
            "created": instant(created if created is not None else end, min(minute + 30, 1439)),
            "provider": ref("Organization", org, org_name),
            "priority": {"coding": [coding(systems.PROCESS_PRIORITY, "normal", "Normal")]},
            "facility": ref("Location", loc),
            "insurance": [{"sequence": 1, "focal": True, "coverage": ref("Coverage", coverage)}],
            "total": money(total),
        }
        if diagnoses:
            res["diagnosis"] = [
                {"sequence": n, "diagnosisReference": ref("Condition", c)} for n, c in enumerate(diagnoses, start=1)
            ]
        if lines:
            res["item"] = lines
        return res


def service_item(code: str, display: str, quantity: float, price: float) -> Item:
    return Item({"coding": [coding(systems.SERVICE_ITEM, code, display)], "text": display}, quantity, price)


def lab_item(loinc: str, display: str, text: str, price: float) -> Item:
    return Item({"coding": [coding(systems.LOINC, loinc, display)], "text": text}, 1, price)


def drug_item(code: str, drug: dict[str, Any], quantity: float) -> Item:
    return Item(
        {"coding": [coding(systems.ATC, code, drug["atc"])], "text": drug["name"]}, quantity, drug["price"], code
    )


def _treats(drug: str, icd_codes: list[str]) -> bool:
    """Whether a drug is indicated for any of the diagnoses (by the drug lists of the clinical data)."""
    clinical = load("clinical")
    for group in (clinical["chronic"], clinical["acute"], load("infectious")["diseases"]):
        for d in group:
            if d["icd"] in icd_codes and drug in d.get("drugs", []):
                return True
    return False
