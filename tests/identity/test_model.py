"""The Fellegi-Sunter model: EM recovers known parameters; the file form loads, round-trips and is checked."""

import json

import numpy as np
import pytest

from changbai.errors import InvalidInput
from changbai.identity import model as fs
from changbai.identity.comparisons import COMPARISONS


def _draw(rng, probs, n):
    return rng.choice(len(probs), size=n, p=probs)


def test_em_recovers_known_m_u_and_match_share():
    rng = np.random.default_rng(5)
    truth = fs.blank("truth")
    # Known parameters: agreement levels likely for matches, the last level likely for non-matches.
    for f in truth.fields:
        n = len(f.levels)
        m = np.array([0.7] + [0.3 / (n - 1)] * (n - 1))
        u = np.array([0.02] * (n - 1) + [1 - 0.02 * (n - 1)])
        f.m, f.u, f.fixed_m = list(m), list(u), {}
    share, n_pairs = 0.3, 40_000
    is_match = rng.random(n_pairs) < share
    columns = []
    for f in truth.fields:
        col = np.where(is_match, _draw(rng, f.m, n_pairs), _draw(rng, f.u, n_pairs))
        columns.append(col)
    vectors = np.stack(columns, axis=1)

    fitted = fs.blank("fitted")
    for f in fitted.fields:
        f.fixed_m = {}
    learned_share, iterations = fitted.fit_em(vectors, fix_u=False)
    assert iterations < 100
    assert learned_share == pytest.approx(share, abs=0.02)
    for t, f in zip(truth.fields, fitted.fields, strict=True):
        assert np.allclose(f.m, t.m, atol=0.03), f.field
        assert np.allclose(f.u, t.u, atol=0.03), f.field


def test_missing_fields_carry_no_weight():
    model = fs.load()
    everything_missing = [-1] * len(COMPARISONS)
    assert model.weight(everything_missing) == pytest.approx(model.prior_weight)


def test_shipped_model_loads_and_agrees_with_the_comparisons():
    model = fs.load()
    assert [f.field for f in model.fields] == [c.field for c in COMPARISONS]
    assert 0 < model.thresholds.review <= model.thresholds.auto_link < 1
    assert {g.name for g in model.guards} >= {"possible-twin", "different-resident-ids"}
    # Agreement on a valid resident ID is evidence for, two different valid IDs strongly against.
    ident = dict(zip(model.fields[0].levels, model.fields[0].weights(), strict=True))
    assert ident["exact-valid"] > 5 > 0 > -5 > ident["different-valid"]


def test_model_file_round_trips(tmp_path):
    model = fs.load()
    path = tmp_path / "model.json"
    model.save(path)
    again = fs.load(path)
    assert again.to_json() == model.to_json()


def test_model_with_other_levels_is_refused(tmp_path):
    data = fs.load().to_json()
    data["fields"][0]["levels"].pop()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match="levels differ"):
        fs.load(path)


def test_thresholds_out_of_order_are_refused():
    data = fs.load().to_json()
    data["thresholds"] = {"auto_link": 0.4, "review": 0.9}
    with pytest.raises(InvalidInput):
        fs.from_json(data)


def test_fixed_m_survives_em():
    model = fs.blank("x")
    sex = next(f for f in model.fields if f.field == "sex")
    vectors = np.zeros((200, len(model.fields)), dtype=np.int64)
    vectors[:100, next(i for i, f in enumerate(model.fields) if f.field == "sex")] = 1
    model.fit_em(vectors)
    assert sex.m[sex.levels.index("different")] == pytest.approx(0.005)
