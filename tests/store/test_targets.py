"""References keep their target's rid (idx_reference.target_rid), and chains and _has that follow it
answer exactly as when they looked every target up by type and id: targets stored before, in the same
batch, after (filled in), never; deleted and revived; written concurrently on PostgreSQL (left NULL);
rows stored before the column existed (the migration's backfill)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import select, update

from changbai.store import schema as t
from changbai.store.database import alembic_config, upgrade


def _patient(id, family):
    return {"resourceType": "Patient", "id": id, "name": [{"family": family}], "gender": "female"}


def _obs(id, patient, code="2339-0"):
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def _targets(repo, rtype, id):
    """(target type, target id, the target's (type, id) through target_rid) of a resource's references."""
    c, r = t.idx_reference.c, t.resource.c
    target = t.resource.alias("target")
    q = (
        select(c.target_type, c.target_id, target.c.rtype, target.c.id)
        .join(t.resource, r.rid == c.rid)
        .outerjoin(target, target.c.rid == c.target_rid)
        .where(r.rtype == rtype, r.id == id, c.target_id.is_not(None))
    )
    with repo.db.read() as conn:
        return sorted({tuple(row) for row in conn.execute(q)})  # subject and patient: one each


def ids(repo, rtype, *params):
    with repo.unit(write=False) as u:
        return sorted(m.id for m in u.search(rtype, list(params)).matches)


def count(repo, rtype, *params):
    with repo.unit(write=False) as u:
        return u.search(rtype, [*params, ("_summary", "count")]).total


def test_target_rids_are_set_whenever_the_target_is_stored(repo):
    repo.create(_obs("before", "late"), id="before")  # the patient comes later
    repo.create(_obs("dangling", "nobody"), id="dangling")  # and this one never
    with repo.unit() as u:  # a referrer ahead of its target in one batch
        u.put_many([_obs("same-batch", "late"), _patient("late", "Wang"), _patient("early", "Li")])
    repo.create(_obs("after", "early"), id="after")

    assert _targets(repo, "Observation", "before") == [("Patient", "late", "Patient", "late")]
    assert _targets(repo, "Observation", "same-batch") == [("Patient", "late", "Patient", "late")]
    assert _targets(repo, "Observation", "after") == [("Patient", "early", "Patient", "early")]
    assert _targets(repo, "Observation", "dangling") == [("Patient", "nobody", None, None)]

    assert ids(repo, "Observation", ("subject:Patient.family", "wang")) == ["before", "same-batch"]
    assert ids(repo, "Observation", ("subject.family", "wang,li")) == ["after", "before", "same-batch"]
    assert ids(repo, "Patient", ("_has:Observation:subject:code", "2339-0")) == ["early", "late"]
    assert count(repo, "Patient", ("_has:Observation:subject:code", "2339-0")) == 2
    # subject may name a Group too: the targets found are of the searched type only
    assert ids(repo, "Group", ("_has:Observation:subject:code", "2339-0")) == []
    assert count(repo, "Group", ("_has:Observation:subject:code", "2339-0")) == 0


def test_deleted_targets_drop_out_and_come_back(repo):
    with repo.unit() as u:
        u.put_many([_patient("p1", "Wang"), _patient("p2", "Wang"), _obs("o1", "p1"), _obs("o2", "p2")])
    repo.read("Patient", "p1")
    with repo.unit() as u:
        u.delete("Patient", "p1")
    has = ("_has:Observation:subject:code", "2339-0")
    # alone (a set of targets checked against resource), with another condition, and counted
    assert ids(repo, "Patient", has) == ["p2"]
    assert ids(repo, "Patient", has, ("family", "wang")) == ["p2"]
    assert count(repo, "Patient", has) == 1
    assert ids(repo, "Observation", ("subject.family", "wang")) == ["o2"]

    repo.update(_patient("p1", "Wang"))  # the same row again, so the same rid
    assert ids(repo, "Patient", has) == ["p1", "p2"]
    assert count(repo, "Patient", has, ("family", "wang")) == 2
    assert ids(repo, "Observation", ("subject.family", "wang")) == ["o1", "o2"]


def test_references_stored_without_a_target_rid_still_match(repo):
    """What two concurrent transactions on PostgreSQL can leave (a referrer written while its target was
    being created elsewhere), and what rows have before the migration: no target rid, target stored."""
    with repo.unit() as u:
        u.put_many([_patient("p1", "Wang"), _patient("p2", "Li"), _obs("o1", "p1"), _obs("o2", "p2")])
    with repo.db.write() as conn:
        conn.execute(update(t.idx_reference).values(target_rid=None))
    assert ids(repo, "Observation", ("subject:Patient.family", "wang")) == ["o1"]
    assert ids(repo, "Patient", ("_has:Observation:subject:code", "2339-0")) == ["p1", "p2"]
    assert ids(repo, "Patient", ("_has:Observation:subject:code", "2339-0"), ("family", "li")) == ["p2"]
    assert count(repo, "Patient", ("_has:Observation:subject:code", "2339-0")) == 2

    # the migration fills them in: back to the revision before it and up again
    with repo.db.engine.begin() as conn:
        cfg = alembic_config(repo.db)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0011_break_glass_review")
    upgrade(repo.db)
    assert _targets(repo, "Observation", "o1") == [("Patient", "p1", "Patient", "p1")]
    assert _targets(repo, "Observation", "o2") == [("Patient", "p2", "Patient", "p2")]


def test_a_target_created_concurrently_leaves_the_rid_unset_and_still_matches(repo):
    if repo.db.is_sqlite:
        pytest.skip("SQLite has one writer at a time: no transaction writes while another creates")
    with repo.unit() as a:
        a.create(_patient("p1", "Wang"), id="p1")
        a.flush()  # p1's fill-in has run, and found nothing that refers to it
        with repo.unit() as b:  # a transaction of its own, which does not see p1 until a commits
            b.create(_obs("o1", "p1"), id="o1")
    assert _targets(repo, "Observation", "o1") == [("Patient", "p1", None, None)]
    assert ids(repo, "Observation", ("subject:Patient.family", "wang")) == ["o1"]
    assert ids(repo, "Patient", ("_has:Observation:subject:code", "2339-0")) == ["p1"]
