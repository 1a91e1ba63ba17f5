"""Whatever bytes arrive, the sender gets an ACK and the inbox gets a row; nothing else escapes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changbai.exchange.intake import Intake, MemoryStore
from tests.exchange.messages import adt, oru, vxu

SEEDS = [adt().encode(), oru().encode(), vxu().encode()]


def _check(raw: bytes) -> None:
    store = MemoryStore()
    ack = Intake(store).handle(raw)
    text = ack.decode("utf-8", "replace")
    assert text.startswith("MSH") and "\rMSA|A" in text
    assert "internal error" not in text, text  # every fault is named, none is a crash of ours
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
