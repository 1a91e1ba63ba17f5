"""The outbox becomes visible in seq order: readers (federation, subscriptions) move a cursor along seq
and would skip a row whose transaction committed after a later seq had been read."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from changbai.store import schema as t
from changbai.store.database import Database
from changbai.store.pipeline import Context
from changbai.store.repository import Repository, Unit


@pytest.fixture
def pg_repo(postgres_url):
    from tests.conftest import _fresh_pg

    db = Database(_fresh_pg(postgres_url))
    yield Repository(db)
    db.dispose()


def _outbox(repo: Repository) -> list[tuple[int, str]]:
    with repo.db.read() as conn:
        return [(r.seq, r.id) for r in conn.execute(select(t.outbox.c.seq, t.outbox.c.id).order_by(t.outbox.c.seq))]


def test_a_later_writer_waits_for_the_earlier_outbox_rows_to_commit(pg_repo):
    repo = pg_repo
    second_done = threading.Event()

    def second_writer() -> None:
        repo.create({"resourceType": "Basic", "code": {"text": "second"}}, id="second")
        second_done.set()

    with repo.db.write() as conn:
        first = Unit(repo, conn, Context())
        first.create({"resourceType": "Basic", "code": {"text": "first"}}, id="first")
        first.flush(final=True)  # the first transaction has taken its seq and not committed yet
        writer = threading.Thread(target=second_writer)
        writer.start()
        # the second transaction cannot take a seq (nor commit) while the first is open
        assert not second_done.wait(1.5)
        assert _outbox(repo) == []  # and a reader sees neither
    writer.join(30)
    assert second_done.is_set()
    rows = _outbox(repo)
    assert [id for _, id in rows] == ["first", "second"]


def test_rows_of_a_rolled_back_savepoint_never_reach_the_outbox(database_url):
    db = Database(database_url)
    repo = Repository(db)
    try:
        with repo.unit() as unit:
            unit.create({"resourceType": "Basic", "code": {"text": "kept"}}, id="kept")
            with pytest.raises(RuntimeError), unit.savepoint():
                unit.create({"resourceType": "Basic", "code": {"text": "undone"}}, id="undone")
                raise RuntimeError("undo")
        assert [id for _, id in _outbox(repo)] == ["kept"]
        with repo.unit(write=False) as unit:
            assert unit.exists("Basic", "kept") and not unit.exists("Basic", "undone")
    finally:
        db.dispose()
