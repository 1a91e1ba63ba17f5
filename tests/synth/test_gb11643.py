from changbai.synth import gb11643


def test_check_character_of_the_standards_example():
    # The worked example of GB 11643-1999 (a woman born 1949-12-31 in Beijing's Xicheng district).
    assert gb11643.check_char("11010519491231002") == "X"
    assert gb11643.is_valid("11010519491231002X")


def test_made_numbers_are_valid_and_carry_sex_in_parity():
    number = gb11643.make("222401", "1994-07-22", 521)
    assert number.startswith("22240119940722521")
    assert gb11643.is_valid(number)
    assert gb11643.sex_of(number) == "male"
    assert gb11643.sex_of(gb11643.make("222401", "1994-07-22", 520)) == "female"


def test_a_transposed_or_mistyped_digit_fails_the_check():
    number = gb11643.make("220102", "1980-01-15", 123)
    transposed = number[:3] + number[4] + number[3] + number[5:]
    assert number[3] != number[4]
    assert not gb11643.is_valid(transposed)
    typo = number[:10] + str((int(number[10]) + 1) % 10) + number[11:]
    assert not gb11643.is_valid(typo)


def test_the_old_15_digit_form_drops_century_and_check():
    number = gb11643.make("220102", "1965-03-09", 31)
    assert gb11643.to_15(number) == "220102650309031"
    assert gb11643.sex_of(gb11643.to_15(number)) == "male"
