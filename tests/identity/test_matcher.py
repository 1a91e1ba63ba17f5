"""Online matching: candidates through blocking, scores, decisions, grades, invalid IDs, bad input."""

import pytest

from changbai.errors import InvalidInput
from changbai.identity.matcher import Matcher, MemoryIndex
from changbai.identity.normalise import normalise_patient
from changbai.identity.residentid import check_character
from changbai.identity.sqlindex import SqliteIndex

RID = "urn:oid:2.16.156.10011.1.3"


def resident_id(region="222401", birth="19800315", seq="123"):
    body = f"{region}{birth}{seq}"
    return body + check_character(body)


def patient(pid, name=None, rid=None, birth=None, gender=None, phone=None, address=None):
    p = {"resourceType": "Patient", "id": pid}
    if rid:
        p["identifier"] = [{"system": RID, "value": rid}]
    if name:
        p["name"] = [{"text": name}]
    if birth:
        p["birthDate"] = birth
    if gender:
        p["gender"] = gender
    if phone:
        p["telecom"] = [{"system": "phone", "value": phone}]
    if address:
        p["address"] = [{"use": "home", "text": address, "line": [address]}]
    return normalise_patient(p)


ZHANG = dict(name="张伟", birth="1980-03-15", gender="male", phone="13800138000", address="延吉市河南街道光明街12号")


@pytest.fixture(params=["memory", "sqlite"])
def matcher(request, tmp_path):
    index = MemoryIndex() if request.param == "memory" else SqliteIndex(tmp_path / "empi.db")
    m = Matcher(index=index)
    m.add(patient("a", rid=resident_id(), **ZHANG))
    m.add(patient("b", name="李娜", birth="1990-07-01", gender="female", phone="13900000000"))
    return m


def test_same_person_from_another_facility_is_linked_with_certainty(matcher):
    found = matcher.match(patient("new", rid=resident_id(), **ZHANG))
    assert [r.key for r in found] == ["a"]
    assert found[0].decision == "auto-link" and found[0].grade == "certain"


def test_traditional_characters_and_formatted_phone_still_match(matcher):
    found = matcher.match(patient("new", name="張偉", birth="1980-03-15", gender="male", phone="+86 138-0013-8000"))
    assert found[0].key == "a"
    assert found[0].decision == "auto-link" and found[0].grade == "probable"
    assert found[0].levels["name"] == "exact"


def test_pinyin_name_with_old_fifteen_digit_id_matches(matcher):
    old = resident_id()[:6] + resident_id()[8:17]
    found = matcher.match(patient("new", name="Wei Zhang", rid=old, gender="male"))
    assert found[0].key == "a" and found[0].levels["id_number"] == "exact-valid"
    assert found[0].levels["name"] == "pinyin"


def test_different_person_is_not_a_candidate_above_review(matcher):
    assert matcher.match(patient("new", name="王芳", birth="1975-01-02", gender="female", phone="13700000000")) == []


def test_invalid_id_is_never_a_sure_match():
    m = Matcher()
    bad = resident_id()[:-1] + ("0" if resident_id()[-1] != "0" else "1")
    m.add(patient("a", rid=bad, name="张伟"))
    found = m.match(patient("new", rid=bad, name="张伟"), minimum="any")
    assert found and found[0].levels["id_number"] == "exact-unverified"
    assert found[0].decision != "auto-link" and found[0].grade != "certain"


def test_twins_go_to_review_not_auto_link():
    m = Matcher()
    home = dict(birth="2001-05-05", gender="male", phone="13812345678", address="延吉市河南街道光明街12号")
    m.add(patient("a", name="朴明哲", **home))
    found = m.match(patient("twin", name="朴明浩", **home), minimum="any")
    assert found[0].decision in ("review", "no-match")


def test_a_match_with_nothing_usable_is_a_clear_error(matcher):
    with pytest.raises(InvalidInput, match="nothing usable"):
        matcher.match(normalise_patient({"resourceType": "Patient", "gender": "male"}))


def test_removed_records_are_no_longer_candidates(matcher):
    matcher.remove("a")
    assert matcher.match(patient("new", rid=resident_id(), **ZHANG)) == []
