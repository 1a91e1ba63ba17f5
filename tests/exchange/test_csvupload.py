# ruff: noqa: F811  (test parameters named after the imported fixture)
"""CSV uploads: templates, per-row report, both modes, encodings, and storage through the platform."""

from __future__ import annotations

from typing import Any

import pytest

from changbai.errors import InvalidInput
from changbai.exchange import csvupload
from changbai.exchange.datatypes import local_system
from changbai.exchange.service import upload_csv
from tests.exchange.fixtures import core_platform, search  # noqa: F401  (core_platform: a pytest fixture)

PATIENTS = (
    "patient_id,resident_id,name,gender,birth_date,phone,address,division_code\r\n"
    "P1,220102198002151239,张三,男,1980-02-15,13900000000,人民大街1号,220102\r\n"
    "P2,,李四,女,1990-13-01,,,\r\n"  # impossible month
    "P3,220102198002151230,王五,male,1985-06-01,,,\r\n"  # wrong check digit
    "P4,,赵六,2,1975-01-31,,,220102001\r\n"
)


def test_templates_are_header_rows_of_the_documented_columns() -> None:
    text = csvupload.template("observations")
    assert text.startswith("\ufeff") and text.strip("\ufeff\r\n").split(",")[:2] == ["patient_id", "code"]
    with pytest.raises(InvalidInput):
        csvupload.template("claims")


def test_valid_rows_mode_loads_good_rows_and_reports_the_others() -> None:
    up = csvupload.read("patients", PATIENTS.encode("utf-8"), "CLINIC9")
    assert [(r.row, r.status) for r in up.rows] == [(1, "accepted"), (2, "refused"), (3, "refused"), (4, "accepted")]
    assert "birth_date '1990-13-01' is not a date" in up.rows[1].errors[0]
    assert "check digit" in up.rows[2].errors[0]
    patients = [e["resource"] for e in up.bundle["entry"]]
    assert [p["name"][0]["text"] for p in patients] == ["张三", "赵六"]
    assert patients[0]["gender"] == "male" and patients[1]["gender"] == "female"
    assert patients[0]["identifier"][1] == {"system": "urn:oid:2.16.156.10011.1.3", "value": "220102198002151239"}
    report = up.report()
    assert report.splitlines()[0] == "row,status,reasons" and "refused" in report


def test_all_or_nothing_mode_loads_nothing_when_a_row_is_refused() -> None:
    up = csvupload.read("patients", PATIENTS.encode("utf-8"), "CLINIC9", "all-or-nothing")
    assert up.bundle["entry"] == []
    assert {r.status for r in up.rows} == {"refused", "not-loaded"}


def test_gb18030_files_from_excel_are_read() -> None:
    up = csvupload.read("patients", PATIENTS.encode("gb18030"), "CLINIC9")
    assert up.accepted == 2


def test_missing_required_columns_refuse_the_whole_file() -> None:
    with pytest.raises(InvalidInput) as caught:
        csvupload.read("observations", b"patient_id,code\r\nP1,2345-7\r\n", "C")
    assert "value" in str(caught.value) and "date" in str(caught.value)


def test_uploads_are_stored_and_a_second_upload_changes_nothing(core_platform: Any) -> None:
    obs = (
        "patient_id,code,display,value,unit,date\r\n"
        "P1,2345-7,血糖,5.6,mmol/L,2026-03-01 08:30\r\n"
        "P1,8480-6,收缩压,abc,mm[Hg],2026-03-01\r\n"
        "P1,2345-7,血糖,5.9,mmol/L,2026-03-02\r\n"
    ).encode()
    upload_csv(core_platform, "patients", PATIENTS.encode(), "CLINIC9")
    first = upload_csv(core_platform, "observations", obs, "CLINIC9")
    assert first.accepted == 3  # a text value is kept as text
    upload_csv(core_platform, "observations", obs, "CLINIC9")
    imms = "patient_id,vaccine_code,vaccine_name,date,lot,dose_ml\r\nP4,08,乙肝疫苗,2026-03-05,L1,0.5\r\n"
    assert upload_csv(core_platform, "immunizations", imms.encode(), "CLINIC9").accepted == 1
    [(pid, _, _)] = search(core_platform, "Patient", f"identifier={local_system('CLINIC9')}|P1")
    found = search(core_platform, "Observation", f"subject=Patient/{pid}")
    assert len(found) == 3 and all(v == 1 for _, v, _ in found)
    assert len(search(core_platform, "Immunization", "vaccine-code=http://hl7.org/fhir/sid/cvx|08")) == 1
    assert len(search(core_platform, "Patient")) == 2
