"""Resident ID numbers: check digit, region, birth date, sex, and old 15-digit numbers."""

from datetime import date

from changbai.identity.residentid import check_character, parse

# The worked example of GB 11643-1999 (Beijing Chaoyang, born 1949-12-31, female).
STANDARD_EXAMPLE = "11010519491231002X"


def test_standard_example_validates_with_its_x_check_character():
    rid = parse(STANDARD_EXAMPLE)
    assert rid.valid and rid.problems == ()
    assert (rid.region, rid.birth_date, rid.sex) == ("110105", "1949-12-31", "female")


def test_lower_case_x_spaces_and_full_width_digits_are_cleaned():
    assert parse("110105 19491231 002x").number == STANDARD_EXAMPLE
    assert parse("１１０１０５１９４９１２３１００２Ｘ").valid


def test_wrong_check_digit_is_invalid_but_kept_as_given():
    rid = parse("110105194912310021")
    assert not rid.valid
    assert "wrong check digit" in rid.problems
    assert rid.given == "110105194912310021"


def test_impossible_and_future_birth_dates_are_invalid():
    body = "22010219900230123"
    assert "impossible birth date 19900230" in parse(body + check_character(body)).problems
    future = "220102" + "20990101" + "123"
    assert not parse(future + check_character(future), today=date(2026, 1, 1)).valid


def test_unknown_province_is_invalid():
    body = "99010219900101123"
    rid = parse(body + check_character(body))
    assert not rid.valid and rid.problems == ("unknown region 990102",)


def test_retired_county_code_stays_valid_with_a_warning():
    # 220181 was 九台市, now 九台区 220113: numbers issued under the old code are still genuine.
    body = "22018119900101123"
    rid = parse(body + check_character(body))
    assert rid.valid
    assert rid.warnings == ("region-unlisted",)
    assert rid.region == "220100"  # resolved to 长春市


def test_sex_from_seventeenth_digit_parity():
    male = "22240119800101011"
    assert parse(male + check_character(male)).sex == "male"
    female = "22240119800101012"
    assert parse(female + check_character(female)).sex == "female"


def test_fifteen_digit_number_converts_to_eighteen():
    rid = parse("110105491231002")
    assert rid.converted and rid.valid
    assert rid.number == STANDARD_EXAMPLE


def test_wrong_shape_is_invalid():
    for value in ("12345", "11010519491231002Y", "abcdefghijklmnopqr"):
        assert not parse(value).valid
