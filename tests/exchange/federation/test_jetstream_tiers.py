"""Three real nodes (county -> city -> province) as separate processes with the JetStream transport
(CHANGBAI_FEDERATION_TRANSPORT=jetstream) on the real NATS server: the city takes the county's batches
from the stream, applies them and publishes its own for the province.

What a user relies on: a node killed in the middle of a burst (the city: receiver and uplink at once) and
restarted loses nothing, doubles nothing and keeps every resource's versions in order at the province;
while the city is down the county's link does not fail: its batches wait in the stream. (A child killed
between publishing a batch and its checkpoint is in test_jetstream.py, where the moment can be chosen.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.exchange.federation.jetstream import delete_stream, new_stream
from tests.exchange.federation.nodes import histories, history_total, wait_until
from tests.exchange.federation.test_three_tiers import Tiers, _burst_with, _uplink


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiers]:
    name = new_stream()
    try:
        t = Tiers(
            tmp_path_factory.mktemp("jetstream-tiers"),
            CHANGBAI_FEDERATION_TRANSPORT="jetstream",
            CHANGBAI_NATS_STREAM=name,
            CHANGBAI_NATS_ACK_WAIT_SECONDS="3",  # a batch held by a killed node is handed out again after 3 s
        )
    except BaseException:  # no stream left behind when the nodes do not come up
        delete_stream(name)
        raise
    yield t
    t.stop()
    delete_stream(name)


def test_city_killed_in_a_burst_loses_doubles_and_reorders_nothing(tiers: Tiers) -> None:
    seen: dict[str, Any] = {}

    def kill_the_city_for_a_while() -> None:
        tiers.city.kill()
        # The county's link does not fail: what it publishes waits in the stream for the city.
        wait_until(lambda: (_uplink(tiers.county).get("awaitingParent") or 0) > 0, 30, "batches waiting for the city")
        seen["county link"] = _uplink(tiers.county)
        tiers.city.start()

    _burst_with(tiers, 200, seed=21, during=kill_the_city_for_a_while)
    assert seen["county link"]["failuresInARow"] == 0 and seen["county link"]["transport"] == "jetstream"
    tiers.converged(timeout=120)
    assert history_total(tiers.province) == history_total(tiers.county)
    # Every version of every resource, in the same order, at the province (and at the city between).
    at_county = histories(tiers.county)
    assert histories(tiers.province) == at_county
    assert histories(tiers.city) == at_county
    assert sum(len(v) for v in at_county.values()) > len(at_county)  # updates and deletes were among them
