"""Normalising a FHIR Patient: identifiers, phones, addresses, fallbacks from the resident ID."""

from changbai.identity.divisions import divisions
from changbai.identity.normalise import normalise_patient
from changbai.identity.phones import normalise_mobile
from changbai.settings import override

RID = "urn:oid:2.16.156.10011.1.3"


def test_mobile_numbers_lose_country_code_spaces_and_dashes():
    for value in ("+86 138 0013 8000", "0086-138-0013-8000", "138-0013-8000", "(+86)13800138000"):
        assert normalise_mobile(value) == "13800138000"
    assert normalise_mobile("12800138000") is None  # 12x is not a mobile range
    assert normalise_mobile("1380013800") is None


def test_addresses_parse_to_province_city_county_and_township():
    a = divisions().parse("吉林省延边朝鲜族自治州延吉市河南街道光明街12号")
    assert (a.province, a.city, a.county, a.township) == ("220000", "222400", "222401", "222401005")
    assert a.rest == "光明街12号"


def test_addresses_may_skip_levels_or_be_traditional():
    assert divisions().parse("延吉市河南街道").township == "222401005"
    assert divisions().parse("長春市九台區營城街道").township == "220113002"
    assert divisions().parse("吉林长白县").county == "220623"  # 长白朝鲜族自治县 by its short name


def test_unknown_place_leaves_everything_in_rest():
    a = divisions().parse("某某村三组")
    assert a.finest is None and a.rest == "某某村三组"


def test_patient_with_resident_id_and_chinese_address():
    p = normalise_patient(
        {
            "resourceType": "Patient",
            "id": "a",
            "identifier": [{"system": RID, "value": "11010519491231002x"}],
            "name": [{"family": "張", "given": ["三"]}],
            "telecom": [{"system": "phone", "value": "+86 138 0013 8000"}],
            "address": [{"use": "home", "city": "延边朝鲜族自治州", "district": "延吉市", "line": ["光明街12号"]}],
        }
    )
    assert p.id_number == "11010519491231002X" and p.id_valid
    assert p.name.text == "张三"
    assert (p.birth_date, p.sex) == ("1949-12-31", "female")  # from the ID, since none was given
    assert p.phone == "13800138000"
    assert p.county == "222401" and p.address == "光明街12号"


def test_value_that_validates_is_recognised_whatever_its_system():
    p = normalise_patient({"identifier": [{"system": "urn:some:hospital", "value": "110105491231002"}]})
    assert p.id_number == "11010519491231002X" and p.id_valid


def test_invalid_resident_id_is_kept_and_flagged():
    p = normalise_patient({"identifier": [{"system": RID, "value": "110105194912310021"}]})
    assert p.id_number == "110105194912310021"
    assert not p.id_valid
    assert "wrong check digit" in p.id_problems
    assert any("invalid resident ID" in w for w in p.warnings)


def test_resident_id_system_is_configurable():
    try:
        override(resident_id_system="urn:example:national-id")
        p = normalise_patient({"identifier": [{"system": "urn:example:national-id", "value": "110105194912310021"}]})
        assert p.id_number == "110105194912310021" and not p.id_valid
    finally:
        override(resident_id_system=RID)
