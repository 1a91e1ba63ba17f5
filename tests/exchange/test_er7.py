from __future__ import annotations

import pytest

from changbai.exchange import er7
from tests.exchange.messages import adt


def test_fields_components_repetitions_and_subcomponents_are_numbered_as_the_standard_does() -> None:
    msg = er7.parse(adt(extra_pid="||||||||||||||||||||||||||||||||||"))
    pid = msg.first("PID")
    assert pid is not None
    assert pid.get(3) == "MRN001" and pid.get(3, 4) == "JLH" and pid.get(3, 5) == "MR"
    assert pid.get(5, 1) == "ZHANG" and pid.get(5, 2) == "SAN"
    assert msg.msh.get(1) == "|" and msg.msh.get(2) == "^~\\&"
    assert msg.event == "ADT^A01" and msg.control_id == "C1" and msg.version == "2.5.1"
    two = er7.parse("MSH|^~\\&|A|B|||20260101||ADT^A08|X|P|2.5\rPID|1||a~b&c^^^AUTH\r")
    assert [r[0][0] for r in two.first("PID").reps(3)] == ["a", "b"]
    assert two.first("PID").get(3, 1, 2, rep=1) == "c"


def test_custom_encoding_characters_from_msh_1_and_msh_2() -> None:
    text = "MSH#$*!@#A#B###20260101##ADT$A04#9#P#2.4\rPID#1##ID1$$$AUTH#*ID2##FAM$GIVEN@X\r"
    msg = er7.parse(text)
    pid = msg.first("PID")
    assert msg.event == "ADT^A04"
    assert pid.get(3, 1) == "ID1" and pid.get(3, 4) == "AUTH"
    assert pid.get(4, rep=1) == "ID2"
    assert pid.get(6, 2, 2) == "X"


def test_escape_sequences_are_resolved() -> None:
    msg = er7.parse(
        "MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.5\rOBX|1|FT|C^x^L||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X41\\\\.br\\next\r"
    )
    assert msg.first("OBX").get(5) == "a|b^c&d~e\\fA\nnext"


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_terminators_cr_lf_and_crlf_are_accepted(sep: str) -> None:
    msg = er7.parse(adt().replace("\r", sep))
    assert [s.name for s in msg.segments] == ["MSH", "EVN", "PID", "PV1"]


def test_leading_utf8_bom_is_tolerated() -> None:
    msg = er7.parse(b"\xef\xbb\xbf" + adt().encode())
    assert msg.message_type == "ADT"


def test_gb18030_named_in_msh_18_is_decoded() -> None:
    text = (
        "MSH|^~\\&|HIS|JLH|||20260101||ADT^A04|G1|P|2.5|||||CHN|GB 18030-2000\r"
        "PID|1||M1^^^JLH^MR||张^三丰||19800101|M\r"
    )
    msg = er7.parse(text.encode("gb18030"))
    assert msg.charset == "GB 18030-2000"
    assert msg.first("PID").get(5, 1) == "张" and msg.first("PID").get(5, 2) == "三丰"


def test_utf8_named_in_msh_18_is_decoded() -> None:
    text = (
        "MSH|^~\\&|HIS|JLH|||20260101||ADT^A04|G1|P|2.8|||||CHN|UNICODE UTF-8\rPID|1||M1^^^JLH^MR||李^四||19800101|F\r"
    )
    assert er7.parse(text.encode("utf-8")).first("PID").get(5, 1) == "李"


def test_bytes_that_do_not_match_the_declared_charset_are_an_error_at_msh_18() -> None:
    text = (
        "MSH|^~\\&|HIS|JLH|||20260101||ADT^A04|G1|P|2.5|||||CHN|UNICODE UTF-8\rPID|1||M1^^^JLH^MR||张^三||19800101|M\r"
    )
    with pytest.raises(er7.HL7Error) as caught:
        er7.parse(text.encode("gb18030"))
    err = caught.value
    assert (err.segment, err.field_no, err.hl7_code) == ("MSH", 18, "102")


def test_unknown_charset_is_rejected() -> None:
    text = "MSH|^~\\&|HIS|JLH|||20260101||ADT^A04|G1|P|2.5|||||CHN|KLINGON\r"
    with pytest.raises(er7.HL7Error) as caught:
        er7.parse(text.encode())
    assert caught.value.reject and caught.value.field_no == 18


def test_malformed_segment_is_located() -> None:
    with pytest.raises(er7.HL7Error) as caught:
        er7.parse(adt() + "pid-broken|x\r")
    assert caught.value.seq == 5 and caught.value.hl7_code == "100"


def test_missing_msh_or_required_header_fields_reject_the_message() -> None:
    with pytest.raises(er7.HL7Error) as caught:
        er7.parse("PID|1||X\r")
    assert caught.value.reject
    with pytest.raises(er7.HL7Error) as caught:
        er7.parse("MSH|^~\\&|A|B|||20260101||ADT^A01||P|2.5\r")
    assert (caught.value.field_no, caught.value.hl7_code) == (10, "101")
    with pytest.raises(er7.HL7Error) as caught:
        er7.parse("MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|3.0\r")
    assert caught.value.hl7_code == "203"
