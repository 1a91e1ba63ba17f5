from pathlib import Path

import orjson
import pytest

from changbai.errors import InvalidInput
from changbai.synth import generate, truth


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("truth")
    generate(out, 200, 5)
    return out


def test_true_matches_are_pairs_of_records_of_one_person(province):
    links = truth.person_of_patient(province)
    patients = [orjson.loads(line)["id"] for line in (province / "Patient.ndjson").read_bytes().splitlines()]
    assert set(links) == set(patients)
    pairs = truth.same_person_pairs(province)
    assert pairs
    for a, b in pairs:
        assert a < b and links[a] == links[b]


def test_outbreaks_cases_and_abuse_are_readable(province):
    cases = {c["condition_id"] for c in truth.infectious_cases(province)}
    for ob in truth.outbreaks(province):
        assert set(ob["cases"]) <= cases
    patterns = {a.pattern for a in truth.abusive_claims(province)}
    assert patterns <= {"duplicate_billing", "drug_not_matching_diagnosis", "over_quantity", "split_admission"}
    assert len(truth.persons(province)) == 200


def test_a_directory_without_ground_truth_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput):
        truth.person_of_patient(tmp_path)
