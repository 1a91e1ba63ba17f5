from __future__ import annotations

from changbai.exchange import ack, er7
from tests.exchange.messages import adt


def segments(text: str) -> dict[str, list[str]]:
    return {line[:3]: line.split("|") for line in text.split("\r") if line}


def test_aa_answers_in_the_message_version_with_the_original_control_id() -> None:
    msg = er7.parse(adt(control_id="CTRL42", version="2.6"))
    s = segments(ack.build_ack(msg, "AA"))
    assert s["MSH"][8] == "ACK^A01^ACK" and s["MSH"][11] == "2.6"
    assert s["MSH"][2] == "CHANGBAI" and s["MSH"][4] == "HIS"  # sender and receiver swapped
    assert s["MSA"][1:3] == ["AA", "CTRL42"]
    assert "ERR" not in s


def test_ae_names_segment_field_code_and_severity_in_err() -> None:
    msg = er7.parse(adt())
    err = er7.HL7Error("bad date", segment="PID", seq=3, field_no=7, hl7_code="102")
    s = segments(ack.build_ack(msg, "AE", [err]))
    assert s["MSA"][1] == "AE"
    assert s["ERR"][2] == "PID^3^7"
    assert s["ERR"][3] == "102^Data type error^HL70357"
    assert s["ERR"][4] == "E"
    assert s["ERR"][8] == "PID[3]-7: bad date"


def test_v23_senders_get_the_older_err_1_form_and_msa_3_text() -> None:
    msg = er7.parse(adt(version="2.3"))
    err = er7.HL7Error("missing", segment="PID", seq=3, field_no=3, hl7_code="101")
    s = segments(ack.build_ack(msg, "AE", [err]))
    assert s["ERR"][1] == "PID^3^3^101&Required field missing&HL70357"
    assert s["MSA"][3] == "PID[3]-3: missing"


def test_ar_for_an_unreadable_header_still_carries_what_could_be_read() -> None:
    text = ack.build_ack(
        None, "AR", [er7.HL7Error("no MSH", segment="MSH", seq=1, hl7_code="100")], fallback_control_id="X9"
    )
    s = segments(text)
    assert s["MSA"][1:3] == ["AR", "X9"]


def test_custom_delimiters_and_charset_are_echoed() -> None:
    raw = ("MSH#$*!@#HIS#JLH###20260101##ADT$A04#9#P#2.5######GB18030\rPID#1##M1$$$JLH\r").encode("gb18030")
    msg = er7.parse(raw)
    text = ack.build_ack(msg, "AE", [er7.HL7Error("错误", segment="PID", seq=2, field_no=5, hl7_code="101")])
    assert text.startswith("MSH#$*!@#")
    assert "GB18030" in text.split("\r")[0]
    assert ack.encode(text, msg).decode("gb18030") == text
