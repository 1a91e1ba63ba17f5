"""HL7 v2 batch envelopes: what the splitter makes of well-formed and damaged batches."""

from __future__ import annotations

from changbai.exchange import batch


def test_messages_keep_their_own_bytes_and_stray_segments_become_messages_to_refuse() -> None:
    raw = (
        b"\xef\xbb\xbfBHS|^~\\&|LIS|JLH\r\nNTE|stray\r\n"
        b"MSH|^~\\&|LIS|JLH|||20260101||ORU^R01|1|P|2.5.1|||||CHN|GB18030\rPID|1||\xd5\xc5\r"
        b"MSH|^~\\&|LIS|JLH|||20260101||ORU^R01|2|P|2.5.1\rPID|1\rBTS|3\r"
        b"MSH|^~\\&|LIS|JLH|||20260101||ORU^R01|3|P|2.5.1\r"
    )
    assert batch.is_batch(raw) and not batch.is_batch(b"MSH|^~\\&|x\r")
    file = batch.split(raw)
    assert file.header is None and len(file.parts) == 2
    first, after = file.parts
    assert first.header is not None and first.header.get(3) == "LIS" and first.declared == 3
    assert first.messages == [
        b"NTE|stray\r",
        b"MSH|^~\\&|LIS|JLH|||20260101||ORU^R01|1|P|2.5.1|||||CHN|GB18030\rPID|1||\xd5\xc5\r",
        b"MSH|^~\\&|LIS|JLH|||20260101||ORU^R01|2|P|2.5.1\rPID|1\r",
    ]
    assert after.header is None and after.messages == [b"MSH|^~\\&|LIS|JLH|||20260101||ORU^R01|3|P|2.5.1\r"]


def test_an_empty_batch_gets_an_empty_batch_back() -> None:
    answer = batch.answer(batch.split(b"BHS|^~\\&|HIS|JLH|||||||B9\rBTS|0\r"), lambda raws: [b"unused" for _ in raws])
    bhs, bts = answer.decode().split("\r")[:2]
    assert bhs.split("|")[11] == "B9" and bts == "BTS|0"
