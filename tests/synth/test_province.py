"""The invariants of a generated province, on a small run (a few hundred residents)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from changbai.errors import InvalidInput
from changbai.fhir.validation import validate
from changbai.synth import gb11643, generate, systems

RESIDENTS = 300
SEED = 11


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("province")
    counts = generate(out, RESIDENTS, SEED)
    return out, counts


def resources(out: Path, rtype: str) -> list[dict[str, Any]]:
    path = out / f"{rtype}.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def every_resource(out: Path):
    for path in sorted(out.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            yield orjson.loads(line)


def truth(out: Path, name: str) -> list[dict[str, str]]:
    with open(out / "ground-truth" / name, encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def divisions() -> set[str]:
    path = Path(__file__).parents[2] / "changbai" / "terminology" / "data" / "divisions.csv"
    with open(path, encoding="utf-8") as f:
        return {row["code"] for row in csv.DictReader(f)}


def test_counts_match_the_files_and_cover_the_issue(province):
    out, counts = province
    for rtype, n in counts.items():
        assert len((out / f"{rtype}.ndjson").read_bytes().splitlines()) == n
    expected = {
        "Patient",
        "RelatedPerson",
        "Coverage",
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "Encounter",
        "Condition",
        "Observation",
        "DiagnosticReport",
        "MedicationRequest",
        "MedicationDispense",
        "Immunization",
        "CareTeam",
        "Appointment",
        "Claim",
    }
    assert expected <= set(counts)


def test_every_resource_is_valid_r4(province):
    out, _ = province
    problems = []
    for res in every_resource(out):
        errors = [i for i in validate(res) if i.severity in ("error", "fatal")]
        if errors:
            problems.append((res["resourceType"], res["id"], errors[0].diagnostics, errors[0].expression))
    assert problems == []


def test_every_reference_resolves_within_the_output(province):
    out, _ = province
    ids = {(r["resourceType"], r["id"]) for r in every_resource(out)}
    missing = []

    def walk(node: Any, owner: str) -> None:
        if isinstance(node, dict):
            target = node.get("reference")
            if isinstance(target, str):
                rtype, _, rid = target.partition("/")
                if (rtype, rid) not in ids:
                    missing.append((owner, target))
            for value in node.values():
                walk(value, owner)
        elif isinstance(node, list):
            for value in node:
                walk(value, owner)

    for res in every_resource(out):
        walk(res, f"{res['resourceType']}/{res['id']}")
    assert missing == []


def test_same_seed_gives_byte_identical_output_and_another_seed_does_not(province, tmp_path):
    out, counts = province
    again = generate(tmp_path / "again", RESIDENTS, SEED)
    assert again == counts
    for path in sorted(out.rglob("*.*")):
        twin = tmp_path / "again" / path.relative_to(out)
        assert twin.read_bytes() == path.read_bytes(), path.name
    generate(tmp_path / "other", RESIDENTS, SEED + 1)
    assert (tmp_path / "other" / "Patient.ndjson").read_bytes() != (out / "Patient.ndjson").read_bytes()


def test_resident_ids_are_valid_gb11643_with_sex_parity_and_birth_date(province):
    out, _ = province
    persons = {p["primary_patient"]: p for p in truth(out, "persons.csv")}
    for patient in resources(out, "Patient"):
        if patient["id"] not in persons:
            continue  # duplicate registrations carry deliberate errors
        number = next(i["value"] for i in patient["identifier"] if i["system"] == systems.RESIDENT_ID)
        assert gb11643.is_valid(number), number
        assert gb11643.sex_of(number) == patient["gender"]
        assert number[6:14] == patient["birthDate"].replace("-", "")
    assert len(persons) == RESIDENTS
    assert len({p["resident_id"] for p in persons.values()}) == RESIDENTS


def test_region_codes_are_real_divisions(province, divisions):
    out, _ = province
    for p in truth(out, "persons.csv"):
        assert p["resident_id"][:6] in divisions
        assert p["county"] in divisions and p["township"] in divisions
        assert p["township"].startswith(p["county"])
    for rtype in ("Patient", "Organization", "RelatedPerson"):
        for res in resources(out, rtype):
            for addr in res.get("address", []):
                ext = next(e for e in addr["extension"] if e["url"] == systems.EXT_DIVISION)
                assert ext["valueCoding"]["code"] in divisions
    assert {c["valueCoding"]["code"][:4] for r in resources(out, "Location") for c in r["address"]["extension"]} <= {
        "2201",
        "2202",
        "2203",
        "2204",
        "2205",
        "2206",
        "2207",
        "2208",
        "2224",
    }


def test_ages_match_birth_dates_and_the_pyramid_is_plausible(province):
    out, _ = province
    summary = json.loads((out / "ground-truth" / "summary.json").read_text())
    as_of = date.fromisoformat(summary["as_of"])
    ages = []
    for p in truth(out, "persons.csv"):
        born = date.fromisoformat(p["birth_date"])
        assert born < as_of
        age = as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day))
        assert 0 <= age <= 100
        ages.append(age)
    elderly = sum(a >= 60 for a in ages) / len(ages)
    assert 0.12 < elderly < 0.35  # Jilin 2020 census: 23% aged 60 and over


def test_households_put_minors_with_their_parents(province):
    out, _ = province
    persons = truth(out, "persons.csv")
    households: dict[str, list[dict[str, str]]] = {}
    for p in persons:
        households.setdefault(p["household"], []).append(p)
    assert 1.8 < len(persons) / len(households) < 3.0  # Jilin 2020 census: about 2.4 per family household
    minors = [p for p in persons if p["birth_date"] > "2008-01-01"]
    with_adult = [
        p for p in minors if any(m["birth_date"] < "2000-01-01" for m in households[p["household"]] if m is not p)
    ]
    assert len(with_adult) > 0.9 * len(minors)
    for members in households.values():
        assert len({m["township"] for m in members}) == 1


def test_no_care_before_birth_or_after_death(province):
    out, _ = province
    people = {p["person_id"]: p for p in truth(out, "persons.csv")}
    owner = {r["patient_id"]: people[r["person_id"]] for r in truth(out, "patient-records.csv")}
    checked = 0
    for enc in resources(out, "Encounter"):
        p = owner[enc["subject"]["reference"].split("/")[1]]
        start, end = enc["period"]["start"][:10], enc["period"]["end"][:10]
        assert p["birth_date"] <= start <= end
        if p["death_date"]:
            assert end <= p["death_date"], (enc["id"], p["death_date"])
        checked += 1
    for imm in resources(out, "Immunization"):
        p = owner[imm["patient"]["reference"].split("/")[1]]
        assert p["birth_date"] <= imm["occurrenceDateTime"][:10]
        if p["death_date"]:
            assert imm["occurrenceDateTime"][:10] <= p["death_date"]
    for cond in resources(out, "Condition"):
        p = owner[cond["subject"]["reference"].split("/")[1]]
        assert p["birth_date"] <= cond["onsetDateTime"]
    assert checked > RESIDENTS


def test_every_patient_record_maps_to_one_person(province):
    out, _ = province
    records = truth(out, "patient-records.csv")
    people = {p["person_id"] for p in truth(out, "persons.csv")}
    patients = {r["id"] for r in resources(out, "Patient")}
    assert {r["patient_id"] for r in records} == patients
    assert all(r["person_id"] in people for r in records)
    primaries = Counter(r["person_id"] for r in records if r["primary"] == "true")
    assert set(primaries) == people and set(primaries.values()) == {1}
    duplicates = [r for r in records if r["primary"] == "false"]
    assert len(duplicates) > RESIDENTS * 0.05
    errors = Counter(e for r in duplicates for e in r["errors"].split(";") if e)
    assert len(errors) >= 5  # several kinds of registration error occur


def test_duplicate_records_carry_the_errors_the_ground_truth_names(province):
    out, _ = province
    persons = {p["person_id"]: p for p in truth(out, "persons.csv")}
    patients = {r["id"]: r for r in resources(out, "Patient")}
    for row in truth(out, "patient-records.csv"):
        errors = set(row["errors"].split(";")) - {""}
        rec = patients[row["patient_id"]]
        ids = [i["value"] for i in rec["identifier"] if i.get("system") == systems.RESIDENT_ID]
        true_id = persons[row["person_id"]]["resident_id"]
        if "missing_id" in errors:
            assert ids == []
        elif "id15" in errors:
            assert ids == [gb11643.to_15(true_id)]
        elif errors & {"transposed_id", "id_typo"}:
            assert ids != [true_id] and not gb11643.is_valid(ids[0])
        else:
            assert ids == [true_id]
        if not errors & {"homophone", "typo_char", "nickname", "traditional", "pinyin", "hangul_only"}:
            assert rec["name"][0]["text"] == persons[row["person_id"]]["name"]


def test_outbreaks_are_real_clusters_of_existing_cases(province, divisions):
    out, _ = province
    outbreaks = json.loads((out / "ground-truth" / "outbreaks.json").read_text())
    conditions = {c["id"]: c for c in resources(out, "Condition")}
    cases = {c["condition_id"]: c for c in truth(out, "infectious-cases.csv")}
    assert len(outbreaks) >= 3
    for ob in outbreaks:
        assert ob["place"]["county"] in divisions and ob["place"]["township"] in divisions
        assert ob["size"] == len(ob["cases"]) >= 3
        for cid in ob["cases"]:
            assert conditions[cid]["code"]["coding"][0]["code"] == ob["icd10"]
            assert cases[cid]["outbreak_id"] == ob["id"]
            assert ob["start"] <= cases[cid]["onset"] <= ob["end"]
            assert cases[cid]["county"] == ob["place"]["county"]
    baseline = [c for c in cases.values() if not c["outbreak_id"]]
    assert baseline, "seasonal baseline cases exist beside the outbreaks"
    for c in baseline:
        assert conditions[c["condition_id"]]["code"]["coding"][0]["system"] == systems.ICD10


def test_claims_abuse_ground_truth_points_at_real_claims(province):
    out, _ = province
    claims = {c["id"]: c for c in resources(out, "Claim")}
    encounters = {e["id"]: e for e in resources(out, "Encounter")}
    rows = truth(out, "claims-abuse.csv")
    patterns = Counter(r["pattern"] for r in rows)
    assert patterns, "some abuse is injected"
    for r in rows:
        assert r["encounter_id"] in encounters
        claim = claims[r["claim_id"]]
        if r["pattern"] == "split_admission":
            # the readmission the day after discharge, same hospital, same diagnosis
            first = claims[r["related_claim_id"]]
            assert encounters[r["encounter_id"]]["class"]["code"] == "IMP"
            assert first["provider"] == claim["provider"] and first["diagnosis"] == claim["diagnosis"]
            assert date.fromisoformat(claim["billablePeriod"]["start"]) - date.fromisoformat(
                first["billablePeriod"]["end"]
            ) == timedelta(days=1)
        assert claim["item"][0]["encounter"][0]["reference"] == f"Encounter/{r['encounter_id']}"
        if r["pattern"] == "duplicate_billing":
            original = claims[r["related_claim_id"]]
            assert original["item"] == claim["item"] and original["id"] != claim["id"]
    for claim in claims.values():
        assert claim["total"]["currency"] == "CNY"
        assert abs(sum(i["net"]["value"] for i in claim.get("item", [])) - claim["total"]["value"]) < 0.05


def test_codes_come_from_real_systems(province):
    out, _ = province
    for cond in resources(out, "Condition"):
        coding = cond["code"]["coding"][0]
        assert coding["system"] == systems.ICD10 and coding["display"]
    for obs in resources(out, "Observation"):
        assert obs["code"]["coding"][0]["system"] == systems.LOINC
        for q in [obs.get("valueQuantity")] + [c["valueQuantity"] for c in obs.get("component", [])]:
            if q is not None:
                assert q["system"] == systems.UCUM and q["code"]


def test_yanbian_korean_residents_have_bilingual_records(province):
    out, _ = province
    korean = [p for p in resources(out, "Patient") if p["extension"][0]["valueCoding"]["code"] == "10"]
    assert korean
    bilingual = [p for p in korean if len(p["name"]) == 2]
    assert bilingual
    for p in bilingual:
        assert p["name"][1]["extension"][0]["valueCode"] == "ko"
        assert all("\uac00" <= ch <= "\ud7a3" for ch in p["name"][1]["text"])


def test_children_are_vaccinated_on_the_national_schedule(province):
    out, _ = province
    people = {p["primary_patient"]: p for p in truth(out, "persons.csv")}
    doses = Counter()
    for imm in resources(out, "Immunization"):
        code = imm["vaccineCode"]["coding"][0]["code"]
        doses[code] += 1
        p = people.get(imm["patient"]["reference"].split("/")[1])
        if p is not None and code == "HepB" and imm["protocolApplied"][0]["doseNumberPositiveInt"] == 1:
            born = date.fromisoformat(p["birth_date"])
            given = date.fromisoformat(imm["occurrenceDateTime"][:10])
            assert 0 <= (given - born).days <= 1  # the birth dose, within 24 hours
    assert {"HepB", "BCG", "DTaP", "MMR"} <= set(doses)


def test_bad_resident_count_is_refused(tmp_path):
    with pytest.raises(InvalidInput):
        generate(tmp_path, 0, 1)


def test_an_unusable_output_directory_is_a_clear_error(tmp_path, capsys):
    from changbai.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InvalidInput):
        generate(blocker, 10, 1)
    assert main(["synth", "--residents", "10", "--out", str(blocker / "sub")]) == 2
    assert "cannot write the province" in capsys.readouterr().err


def test_cli_writes_a_province(tmp_path, capsys):
    from changbai.cli import main

    assert main(["synth", "--residents", "50", "--seed", "3", "--out", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    assert "Patient" in printed and "total" in printed
    assert (tmp_path / "p" / "Patient.ndjson").exists()
    assert (tmp_path / "p" / "ground-truth" / "persons.csv").exists()


def test_demo_size_gives_a_bounded_volume(tmp_path):
    counts = generate(tmp_path, 2000, 1)
    assert 50_000 <= sum(counts.values()) <= 150_000


def test_output_does_not_depend_on_the_interpreters_hash_seed(tmp_path):
    import os
    import subprocess
    import sys

    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "changbai.cli",
                "synth",
                "--residents",
                "80",
                "--seed",
                "4",
                "--out",
                str(tmp_path / hash_seed),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
    for path in sorted((tmp_path / "1").rglob("*.*")):
        assert (tmp_path / "2" / path.relative_to(tmp_path / "1")).read_bytes() == path.read_bytes(), path.name


def test_care_flows_up_and_down_the_levels(province):
    out, _ = province
    encounters = {e["id"]: e for e in resources(out, "Encounter")}
    orgs = {o["id"]: o for o in resources(out, "Organization")}

    def level(enc: dict) -> str:
        org = orgs[enc["serviceProvider"]["reference"].split("/")[1]]
        return next(
            (t["coding"][0]["code"] for t in org["type"] if t["coding"][0]["system"] == systems.HOSPITAL_LEVEL), ""
        )

    referrals = {r["id"]: r for r in resources(out, "ServiceRequest")}
    assert referrals
    directions = Counter()
    for enc in encounters.values():
        for based in enc.get("basedOn", []):
            sr = referrals[based["reference"].split("/")[1]]
            source = encounters[sr["encounter"]["reference"].split("/")[1]]
            assert sr["performer"][0]["reference"] == enc["serviceProvider"]["reference"]
            directions["up" if level(enc) > level(source) else "down"] += 1
    assert directions["up"] and directions["down"]
    classes = Counter(e["class"]["code"] for e in encounters.values())
    assert classes["AMB"] > classes["IMP"] > 0


def test_recorded_chronic_disease_is_near_surveyed_prevalence_times_diagnosis(province):
    out, _ = province
    adults = [p for p in truth(out, "persons.csv") if p["birth_date"] < "2007-01-01"]
    share = Counter(code for p in adults for code in p["chronic"].split(";") if code)
    # China Hypertension Survey: ~28 % of adults, about half diagnosed; diabetes ~12.8 %, ~40 % diagnosed
    assert 0.07 < share["I10"] / len(adults) < 0.25
    assert 0.015 < share["E11.9"] / len(adults) < 0.11
    conditions = [c for c in resources(out, "Condition") if c["code"]["coding"][0]["code"] == "I10"]
    assert len({c["subject"]["reference"] for c in conditions}) == share["I10"]


def test_progress_reports_residents_done_from_zero_to_all(tmp_path):
    seen: list[int] = []
    generate(tmp_path, 250, 2, progress=seen.append)
    assert seen[0] == 0 and seen[-1] == 250
    assert seen == sorted(seen)


def test_the_platforms_own_codes_are_defined_in_code_systems_of_the_output(province):
    out, _ = province
    defined = {cs["url"]: {c["code"]: c["display"] for c in cs["concept"]} for cs in resources(out, "CodeSystem")}
    own = systems.BASE + "/CodeSystem/"
    used = Counter()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("system", "")).startswith(own) and "code" in node:
                used[node["system"]] += 1
                assert node["code"] in defined[node["system"]], node
                assert (
                    node.get("display", defined[node["system"]][node["code"]]) == defined[node["system"]][node["code"]]
                )
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for res in every_resource(out):
        visit(res)
    assert set(used) == set(defined)


def test_no_diagnosis_is_used_before_its_onset(province):
    out, _ = province
    conditions = {c["id"]: c for c in resources(out, "Condition")}
    for enc in resources(out, "Encounter"):
        for diagnosis in enc.get("diagnosis", []):
            condition = conditions[diagnosis["condition"]["reference"].split("/")[1]]
            assert condition["onsetDateTime"] <= enc["period"]["end"][:10], enc["id"]
