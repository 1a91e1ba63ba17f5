"""Whatever bytes arrive, the sender gets an ACK and the inbox gets a row; nothing else escapes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changbai.exchange import batch
from changbai.exchange.intake import Intake, MemoryStore
from tests.exchange.messages import adt, oru, vxu

SEEDS = [adt().encode(), oru().encode(), vxu().encode(), b"BHS|^~\\&|HIS|JLH\r" + adt().encode() + b"BTS|1\r"]


def _check(raw: bytes) -> None:
    store = MemoryStore()
    ack = Intake(store).handle(raw, enhanced=False)  # original mode: every message is answered
    text = ack.decode("utf-8", "replace")
    assert "internal error" not in text, text  # every fault is named, none is a crash of ours
    if batch.is_batch(raw):  # a batch of ACKs, one per message found, each message with its row
        messages = sum(len(part.messages) for part in batch.split(raw).parts)
        assert text.startswith(("FHS", "BHS")) and "\rBTS" in text
        assert text.count("\rMSA|A") == messages and (len(store.by_id) >= 1) == (messages >= 1)
        return
    assert text.startswith("MSH") and "\rMSA|A" in text
    assert len(store.by_id) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_get_an_ack(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.integers(min_value=0, max_value=600), st.binary(min_size=1, max_size=8))
def test_damaged_real_messages_get_an_ack(seed: bytes, at: int, junk: bytes) -> None:
    at = min(at, len(seed))
    _check(seed[:at] + junk + seed[at + len(junk) :])
