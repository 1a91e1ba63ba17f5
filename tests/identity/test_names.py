"""Names: traditional characters, homophones, fuzzy pinyin, romanised, Korean-Chinese and minority names."""

from changbai.identity.chinese import fuzzy_syllable, split_pinyin, to_simplified
from changbai.identity.names import name_keys, shape_similar


def test_traditional_characters_become_simplified():
    assert to_simplified("張偉") == "张伟"
    assert name_keys("陳國華").text == name_keys("陈国华").text


def test_homophones_share_tones_and_pinyin():
    a, b = name_keys("张伟"), name_keys("章伟")
    assert a.text != b.text
    assert a.tones == b.tones == "zhang1wei3"


def test_homophones_with_different_tones_share_toneless_pinyin():
    a, b = name_keys("王芳"), name_keys("汪芳")
    assert a.tones != b.tones
    assert a.plain == b.plain == "wangfang"


def test_near_homophones_meet_in_fuzzy_pinyin():
    assert name_keys("刘洋").fuzzy == name_keys("牛洋").fuzzy  # n/l
    assert name_keys("陈明").fuzzy == name_keys("程明").fuzzy  # en/eng
    assert name_keys("张三").fuzzy == name_keys("赞三").fuzzy  # zh/z
    assert [fuzzy_syllable(s) for s in ("shi", "chang", "lin")] == ["si", "can", "lin"]


def test_pinyin_written_names_compare_with_chinese_in_either_order():
    han = name_keys("张三丰")
    for written in ("Zhang Sanfeng", "ZHANG SANFENG", "Sanfeng Zhang", "zhang san feng"):
        keys = name_keys(written)
        assert {keys.plain, keys.alt} & {han.plain, han.alt}, written


def test_surname_readings_differ_from_the_common_reading():
    assert name_keys("单田芳").surname == "shan"
    assert name_keys("朴明哲").surname == "piao"
    assert name_keys("欧阳娜娜").surname == "ouyang"


def test_korean_romanised_surname_maps_to_the_mandarin_reading():
    assert name_keys("Park Minjun").surname == name_keys("朴敏俊").surname == "piao"
    assert name_keys("KIM Yuna").plain.startswith("jin")
    assert name_keys("Lee Jun").plain == name_keys("李俊").plain


def test_minority_names_with_middle_dot_compare_in_either_order():
    a = name_keys("阿卜杜拉·买买提")
    b = name_keys("买买提・阿卜杜拉")
    assert a.text == "阿卜杜拉买买提"
    assert a.plain == b.alt


def test_look_alike_characters():
    assert shape_similar("王芳", "玉芳")
    assert not shape_similar("王芳", "李芳")


def test_pinyin_splitting_and_non_pinyin_words():
    assert split_pinyin("xiaoming") == ["xiao", "ming"]
    assert split_pinyin("smith") is None


def test_empty_names_give_nothing():
    assert name_keys("  ") is None
    assert name_keys("·") is None
