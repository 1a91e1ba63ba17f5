"""`changbai inbox` and `changbai upload` as an operator uses them (real database file, real CLI entry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from changbai.cli import main
from changbai.settings import get_settings
from tests.exchange.messages import adt


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CHANGBAI_DATABASE_URL", url)
    monkeypatch.setenv("CHANGBAI_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def _intake(url: str):  # type: ignore[no-untyped-def]
    from changbai.api.app import create_platform
    from changbai.exchange.service import build_intake
    from changbai.settings import Settings

    return build_intake(create_platform(Settings(database_url=url), extensions=[]))


def test_operator_lists_inspects_fixes_and_replays_a_dead_letter(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intake = _intake(db)
    intake.handle(adt(control_id="OK1").encode())
    intake.handle(adt(control_id="BAD1").replace("19800215", "1980/02/15").encode())
    assert main(["inbox", "list", "--failed"]) == 0
    listing = capsys.readouterr().out
    assert "BAD1" in listing and "OK1" not in listing
    row_id = next(line.split()[0] for line in listing.splitlines() if "BAD1" in line)
    assert main(["inbox", "show", row_id]) == 0
    shown = capsys.readouterr().out
    assert "PID-7" in shown and "1980/02/15" in shown and "MSA|AE|BAD1" in shown
    fixed = tmp_path / "fixed.hl7"
    fixed.write_bytes(adt(control_id="BAD1").encode())
    assert main(["inbox", "replay", row_id, "--file", str(fixed)]) == 0
    assert "MSA|AA|BAD1" in capsys.readouterr().out
    assert main(["inbox", "list", "--failed"]) == 0
    assert "BAD1" not in capsys.readouterr().out


def test_upload_template_and_load_report(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upload", "template", "immunizations"]) == 0
    header = capsys.readouterr().out
    assert header.lstrip("\ufeff").startswith("patient_id,vaccine_code")
    data = tmp_path / "imm.csv"
    data.write_text(header + "P1,08,HepB,2026-03-05,L1,0.5\r\nP2,08,HepB,2026-02-30,,\r\n", encoding="utf-8")
    assert main(["upload", "load", "immunizations", str(data), "--facility", "CLINIC1"]) == 1  # a row refused
    report = capsys.readouterr()
    assert "1,accepted," in report.out and "2,refused,date '2026-02-30'" in report.out
    assert "1 row(s) stored, 1 refused" in report.err
