"""The shipped content: every code system loads, hierarchy and Chinese names are right on samples."""

from __future__ import annotations

import csv
import re

from changbai.terminology.content import DATA, catalog, iter_content
from changbai.terminology.expand import load_index
from changbai.terminology.operations import lookup, translate, validate_code

ICD10 = "http://hl7.org/fhir/sid/icd-10"
BASE = "https://changbai.example/fhir"


def test_every_shipped_code_system_loads_with_its_value_set(shipped):
    resources = list(iter_content())
    systems = [r for r in resources if r["resourceType"] == "CodeSystem"]
    assert len(systems) == len(catalog()["codeSystems"])
    for cs in systems:
        index = load_index(shipped, cs["url"], None)
        assert index is not None and len(index.concepts) == cs["count"] > 0, cs["id"]
        assert all(c.display for c in index.concepts.values()), cs["id"]
        assert shipped.value_set(cs["valueSet"]) is not None
    ids = [r["id"] for r in resources]
    assert len({(r["resourceType"], r["id"]) for r in resources}) == len(ids)


def test_icd10_has_every_category_under_a_block_and_a_chapter(shipped):
    index = load_index(shipped, ICD10, None)
    categories = [c for c in index.concepts if re.fullmatch(r"[A-Z][0-9]{2}", c)]
    assert len(categories) >= 2000
    for letter in "ABCDEFGHIJKLMNOPQRSTVWXYZ":
        assert any(c.startswith(letter) for c in categories), letter
    for code in categories:
        chain = index.ancestors(code)
        assert any(re.fullmatch(r"[IVX]+", a) for a in chain), f"{code} has no chapter"


def test_hypertension_sits_in_its_block_in_chapter_ix(shipped):
    index = load_index(shipped, ICD10, None)
    assert index.concepts["I10"].parents == ["I10-I15"]
    assert index.concepts["I10-I15"].parents == ["IX"]
    assert index.concepts["I10"].display == "特发性(原发性)高血压"
    assert index.concepts["IX"].display == "循环系统疾病"
    assert {"I11.0", "I13.2", "I15.9"} <= index.descendants("I10-I15")
    assert index.subsumes("IV", "E11.9") == "subsumes"
    assert index.concepts["E11.9"].parents == ["E11"] and index.concepts["E11"].parents == ["E10-E14"]


def test_code_below_a_chapter_finds_its_codes(shipped):
    index = load_index(shipped, ICD10, None)
    below = index.descendants("I")
    assert {"A00", "A01.0", "B20", "A00-A09"} <= below
    assert "C00" not in below


def test_divisions_form_a_hierarchy_with_chinese_names(shipped):
    index = load_index(shipped, f"{BASE}/CodeSystem/gb-t-2260", None)
    assert index.concepts["220100"].display == "长春市"
    assert index.concepts["220100"].parents == ["220000"]
    assert index.concepts["220000"].display == "吉林省"
    with (DATA / "divisions.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(index.concepts) == len({r["code"] for r in rows})
    township = next(r for r in rows if r["level"] == "township")
    assert township["code"] in index.descendants("220000")


def test_national_value_domains_map_to_fhir_codes(shipped):
    ethnicity = load_index(shipped, f"{BASE}/CodeSystem/gb-t-3304", None)
    assert len([c for c in ethnicity.concepts if int(c) <= 56]) == 56
    assert ethnicity.concepts["10"].display == "朝鲜族"
    sex = {
        "sourceSystem": f"{BASE}/CodeSystem/gb-t-2261-1-sex",
        "sourceCode": "2",
        "targetSystem": "http://hl7.org/fhir/administrative-gender",
    }
    answer = translate(shipped, sex)
    match = next(p for p in answer["parameter"] if p["name"] == "match")
    parts = {p["name"]: p for p in match["part"]}
    assert parts["concept"]["valueCoding"]["code"] == "female"
    assert parts["equivalence"]["valueCode"] == "equivalent"
    married = translate(shipped, {"sourceSystem": f"{BASE}/CodeSystem/gb-t-2261-2-marital-status", "sourceCode": "22"})
    codes = [p["part"] for p in married["parameter"] if p["name"] == "match"]
    assert any(q.get("valueCoding", {}).get("code") == "M" for part in codes for q in part)


def test_loinc_codes_carry_chinese_and_english_names(shipped):
    answer = lookup(shipped, {"system": "http://loinc.org", "code": "4548-4", "displayLanguage": "en"})
    params = {p["name"]: p for p in answer["parameter"]}
    assert params["display"]["valueString"] == "Hemoglobin A1c/Hemoglobin.total in Blood"
    zh = lookup(shipped, {"system": "http://loinc.org", "code": "4548-4"})
    assert any(p.get("valueString") == "糖化血红蛋白(HbA1c)" for p in zh["parameter"])
    cs = shipped.code_system("http://loinc.org")
    assert "Regenstrief" in cs["copyright"]


def test_notifiable_diseases_are_classed_and_mapped_to_icd10(shipped):
    index = load_index(shipped, f"{BASE}/CodeSystem/notifiable-infectious-disease", None)
    assert [index.concepts[c].display for c in index.concepts["A"].children] == ["鼠疫", "霍乱"]
    assert len(index.concepts["B"].children) == 28 and len(index.concepts["C"].children) == 11
    answer = translate(shipped, {"sourceSystem": index.url, "sourceCode": "A02", "targetSystem": ICD10})
    match = next(p for p in answer["parameter"] if p["name"] == "match")
    assert {"name": "concept", "valueCoding": {"system": ICD10, "code": "A00"}} in match["part"]
    icd = load_index(shipped, ICD10, None)
    for concept in index.concepts.values():
        for code in concept.property_values("icd10"):
            assert icd.get(code) is not None, code


def test_immunisation_programme_and_tcm_content(shipped):
    vaccines = load_index(shipped, f"{BASE}/CodeSystem/nip-vaccine", None)
    assert vaccines.concepts["HepB"].display == "乙肝疫苗"
    assert len(vaccines.concepts["HepB"].property_values("dose")) == 3
    tcm = load_index(shipped, f"{BASE}/CodeSystem/tcm-disease-syndrome", None)
    assert tcm.concepts["S-ZF-001"].display == "肝阳上亢证"
    assert tcm.concepts["D"].abstract  # categories are not selectable
    vs = {"url": f"{BASE}/ValueSet/tcm-disease-syndrome", "code": "D", "system": tcm.url, "abstract": False}
    result = validate_code(shipped, vs)
    assert {"name": "result", "valueBoolean": False} in result["parameter"]


def test_shipped_content_loads_into_the_store_and_is_served_from_it(settings):
    from changbai.api.app import create_platform
    from changbai.terminology.content import load
    from changbai.terminology.service import StoreSource

    platform = create_platform(settings, extensions=[])
    try:
        assert load(platform.repo) == len(list(iter_content()))
        with platform.repo.unit(write=False) as unit:
            source = StoreSource(unit)
            answer = lookup(source, {"system": ICD10, "code": "I10"})
            assert {"name": "display", "valueString": "特发性(原发性)高血压"} in answer["parameter"]
    finally:
        platform.db.dispose()
