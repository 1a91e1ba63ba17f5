"""The master index on a platform that protects ID and phone numbers (security on, as every real node
runs): it matches on the numbers in clear, and what it keeps of them is protected like the FHIR store's
copy (blind-index tokens for keys, ciphertext in rows), never the numbers themselves."""

from __future__ import annotations

from sqlalchemy import select

from changbai.api.app import create_platform
from changbai.identity import tables as t
from changbai.identity.registry import registry_of
from changbai.settings import Settings
from changbai.store.pipeline import Context
from tests.identity.test_operations import registration, resident_id

PHONE = "13800138000"


def _secured(settings: Settings):
    return create_platform(settings.model_copy(update={"security": True}))


def _write(platform, resource: dict) -> list[str]:
    with platform.repo.unit(Context(source="cli")) as unit:
        outcome = unit.update("Patient", resource["id"], resource)
    return [w.diagnostics for w in outcome.warnings if "resident ID" in w.diagnostics]


def test_protected_numbers_are_matched_in_clear_and_kept_protected(settings):
    platform = _secured(settings)
    try:
        assert _write(platform, {**registration("h1", "1"), "id": "a"}) == []  # a valid ID is not "invalid"
        _write(platform, {**registration("h2", "2"), "id": "b"})  # the same person at another facility
        typo = resident_id("124")[:-1] + resident_id("123")[-1]  # one digit mistyped (check digit now wrong)
        other = registration("h3", "3", name=[{"family": "张", "given": ["伟"]}])
        other["identifier"][0]["value"] = typo
        del other["telecom"]
        _write(platform, {**other, "id": "c"})
        with platform.repo.unit(write=False) as unit:
            registry = registry_of(unit)
            assert registry.person_of("a") == registry.person_of("b")  # linked on the resident ID
            candidates = registry.matcher.match(_normalised(unit, "c"), minimum="any")
            assert {"a", "b"} <= {r.key for r in candidates}  # the typo still finds them (ID-part blocking)
            kept = [r.row for r in unit.conn.execute(select(t.record.c.row))]
            keys = [r.block for r in unit.conn.execute(select(t.block.c.block))]
        for secret in (resident_id(), resident_id()[6:14] + resident_id()[14:], PHONE):
            assert not any(secret in text for text in kept + keys), secret
        assert any(k.startswith("id:bidx:") for k in keys) and any(k.startswith("phone:bidx:") for k in keys)
    finally:
        platform.db.dispose()


def _normalised(unit, id: str):
    from changbai.identity.normalise import normalise_patient

    return normalise_patient(unit.read("Patient", id).resource, key=id)


def test_rematch_reads_the_numbers_in_clear_and_keeps_them_protected(settings):
    from changbai.identity.registry import rematch

    platform = _secured(settings)
    try:
        _write(platform, {**registration("h1", "1"), "id": "a"})
        _write(platform, {**registration("h2", "2", name=[{"family": "李", "given": ["娜"]}]), "id": "b"})
        with platform.repo.unit(write=False) as unit:
            before = [tuple(r) for r in unit.conn.execute(select(t.record.c.patient, t.record.c.row))]
            blocks = {tuple(r) for r in unit.conn.execute(select(t.block.c.block, t.block.c.patient))}
        assert rematch(platform.repo)["patients"] == 2
        with platform.repo.unit(write=False) as unit:
            registry = registry_of(unit)
            assert registry.person_of("a") == registry.person_of("b")  # same resident ID, despite the name
            rows = dict(unit.conn.execute(select(t.record.c.patient, t.record.c.row)).all())
            again = {tuple(r) for r in unit.conn.execute(select(t.block.c.block, t.block.c.patient))}
        assert again == blocks  # the same keys as the writes made: tokens from the numbers in clear
        assert rows == dict(before)  # the same rows (ciphertext of a value is the same each time)
    finally:
        platform.db.dispose()
