"""Local code maps: suggestions for a facility's code list, confirmation, ConceptMap, round trip."""

from __future__ import annotations

import json

import pytest

from changbai.cli import main
from changbai.errors import InvalidInput
from changbai.terminology.expand import load_index
from changbai.terminology.localmaps import (
    concept_map,
    confirmed_rows,
    local_system,
    read_local_codes,
    suggest,
    suggestions_csv,
)
from changbai.terminology.operations import translate
from changbai.terminology.source import InMemorySource, LayeredSource

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOCAL = """code,name
HIS-001,原发性高血压
HIS-002,2型糖尿病
HIS-003,特发性（原发性）高血压
HIS-004,急性上呼吸道感染
I10,高血压
"""


@pytest.fixture
def icd(shipped):
    return load_index(shipped, ICD10, None)


def test_suggestions_rank_same_name_code_and_similar_text(icd):
    found = {s.local.code: s for s in suggest(read_local_codes(LOCAL), icd)}
    assert found["HIS-003"].candidates[0].code == "I10"
    assert found["HIS-003"].candidates[0].reason == "same name"  # punctuation and width do not matter
    assert found["I10"].candidates[0].code == "I10"
    assert found["HIS-001"].candidates[0].code == "I10"
    assert found["HIS-004"].candidates[0].code.startswith("J06")


def test_local_code_list_must_have_code_and_name_columns():
    with pytest.raises(InvalidInput):
        read_local_codes("id,label\n1,x\n")
    with pytest.raises(InvalidInput):
        read_local_codes("code,name\nA,x\nA,y\n")


def test_confirmed_map_translates_local_codes_and_back(shipped, icd):
    text = suggestions_csv(suggest(read_local_codes(LOCAL), icd))
    lines = text.splitlines()
    # the operator confirms the best candidate of HIS-001 by hand (the others are pre-marked or left)
    lines = [line + "y" if line.startswith("HIS-001,") and ",1," in line else line for line in lines]
    rows = confirmed_rows("\n".join(lines) + "\n")
    assert ("HIS-001", "原发性高血压", "I10") in rows and ("HIS-003", "特发性（原发性）高血压", "I10") in rows
    cm = concept_map("hospital-7", icd, rows)
    source = LayeredSource(InMemorySource([cm]), shipped)
    for local, _, target in rows:
        fwd = translate(
            source, {"sourceSystem": local_system("hospital-7"), "sourceCode": local, "targetSystem": ICD10}
        )
        match = next(p for p in fwd["parameter"] if p["name"] == "match")
        assert {
            "name": "concept",
            "valueCoding": {"system": ICD10, "code": target, "display": icd.concepts[target].display},
        } in match["part"]
        back = translate(
            source, {"targetSystem": ICD10, "targetCode": target, "sourceSystem": local_system("hospital-7")}
        )
        sources = [
            q["valueCoding"]["code"]
            for p in back["parameter"]
            if p["name"] == "match"
            for q in p["part"]
            if q["name"] == "source"
        ]
        assert local in sources


def test_a_local_code_cannot_be_confirmed_to_two_targets():
    text = (
        "local_code,local_name,rank,target_code,target_display,score,reason,confirmed\n"
        "A,x,1,I10,,1,,y\nA,x,2,I11,,1,,y\n"
    )
    with pytest.raises(InvalidInput):
        confirmed_rows(text)


def test_cli_suggest_then_confirm(tmp_path, capsys):
    local = tmp_path / "local.csv"
    local.write_text(LOCAL, encoding="utf-8")
    out = tmp_path / "suggestions.csv"
    assert main(["terminology", "map-suggest", str(local), "--target", ICD10, "--out", str(out)]) == 0
    cm_file = tmp_path / "cm.json"
    assert (
        main(["terminology", "map-confirm", str(out), "--facility", "h1", "--target", ICD10, "--out", str(cm_file)])
        == 0
    )
    cm = json.loads(cm_file.read_text(encoding="utf-8"))
    assert cm["group"][0]["source"] == local_system("h1")
    # only the sure match (same name) is pre-confirmed; the rest wait for the operator
    assert [e["code"] for e in cm["group"][0]["element"]] == ["HIS-003"]
