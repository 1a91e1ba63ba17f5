"""Batch dedupe on Splink shares the online model: same comparison levels, same weights, good clusters."""

import json

import pytest

from changbai.cli import main as cli_main
from changbai.identity import batch, blocking, simulate
from changbai.identity.comparisons import BY_FIELD, COMPARISONS, compare_rows
from changbai.identity.evaluation import accuracy, truth_from_links
from changbai.identity.model import load
from changbai.identity.normalise import normalise_patient


@pytest.fixture(scope="module")
def population():
    records, truth = simulate.population(400, seed=9)
    return records, truth


def test_splink_computes_the_same_levels_and_weights_as_the_online_matcher(population):
    records, _ = population
    model = load()
    patients = [normalise_patient(r) for r in records]
    rows = {p.key: blocking.blocking_row(p) for p in patients}
    pairs = batch.predict(batch.frame(patients), model, threshold=1e-9)
    assert len(pairs) > 100
    for rec in pairs.to_dict("records"):
        ours = compare_rows(rows[rec["unique_id_l"]], rows[rec["unique_id_r"]])
        splink = [batch.splink_gamma(len(BY_FIELD[c.field].levels), int(rec[f"gamma_{c.field}"])) for c in COMPARISONS]
        assert ours == splink, (rec["unique_id_l"], rec["unique_id_r"])
        assert model.weight(ours) == pytest.approx(rec["match_weight"], abs=1e-6)


def test_dedupe_finds_the_people_of_the_synthetic_province(tmp_path_factory):
    from changbai.synth import generate, truth

    out = tmp_path_factory.mktemp("province")
    generate(out, 2000, 1)
    lines = (out / "Patient.ndjson").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    person = truth.person_of_patient(out)
    clusters = batch.dedupe(records)
    assert sorted(k for c in clusters for k in c) == sorted(person)
    acc = accuracy(clusters, person)
    assert acc.false_merges == 0
    assert acc.recall >= 0.95


def test_accuracy_counts_pairs_and_false_merges():
    truth = truth_from_links(["a", "b", "c", "d"], [("a", "b")])
    acc = accuracy([["a", "b", "c"], ["d"]], truth)
    assert (acc.true_pairs, acc.predicted_pairs, acc.correct_pairs, acc.false_merges) == (1, 3, 1, 1)
    assert acc.recall == 1.0 and acc.precision == pytest.approx(1 / 3)


def test_cli_dedupe_prints_one_cluster_per_line(tmp_path, capsys):
    records = [
        {
            "resourceType": "Patient",
            "id": "x1",
            "name": [{"text": "张伟"}],
            "birthDate": "1980-03-15",
            "telecom": [{"system": "phone", "value": "13800138000"}],
        },
        {
            "resourceType": "Patient",
            "id": "x2",
            "name": [{"text": "張偉"}],
            "birthDate": "1980-03-15",
            "telecom": [{"system": "phone", "value": "+86 138 0013 8000"}],
        },
        {"resourceType": "Patient", "id": "x3", "name": [{"text": "李娜"}], "birthDate": "1990-01-01"},
    ]
    path = tmp_path / "patients.ndjson"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    assert cli_main(["empi", "dedupe", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [["x1", "x2"], ["x3"]]


def test_cli_refuses_a_file_that_is_not_patients(tmp_path, capsys):
    path = tmp_path / "bad.ndjson"
    path.write_text('{"resourceType": "Observation"}\n')
    assert cli_main(["empi", "dedupe", str(path)]) == 2
    assert "not a Patient" in capsys.readouterr().err
    path.write_text('{"resourceType": "Patient", "name": "张伟"}\n', encoding="utf-8")
    assert cli_main(["empi", "dedupe", str(path)]) == 2
    assert "bad.ndjson:1" in capsys.readouterr().err


def test_package_exposes_dedupe_sharing_the_shipped_model():
    import changbai.identity as identity

    records = [
        {
            "resourceType": "Patient",
            "id": "p1",
            "name": [{"text": "王芳"}],
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "11010519491231002X"}],
        },
        {
            "resourceType": "Patient",
            "id": "p2",
            "name": [{"text": "Wang Fang"}],
            "identifier": [{"system": "urn:other", "value": "110105491231002"}],
        },
    ]
    assert identity.dedupe(records) == [["p1", "p2"]]
