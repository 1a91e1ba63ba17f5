"""Prepared statements (changbai.store.prepared) give what SQLAlchemy's own execution gives, on both
backends: bound values, IN lists of any length, a statement's own literals (LIMIT), writes in the caller's
transaction."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, insert, select

from changbai.identity import tables as t
from changbai.store.prepared import Prepared

_B = t.block.c
_INSERT = Prepared(insert(t.block).values(block=bindparam("block"), patient=bindparam("patient")))
_IN_BLOCKS = Prepared(
    select(_B.block, _B.patient).where(_B.block.in_(bindparam("blocks", expanding=True))).order_by(_B.patient)
)
_FIRST_TWO = Prepared(select(_B.patient).where(_B.block == bindparam("block")).order_by(_B.patient).limit(2))
_DELETE = Prepared(delete(t.block).where(_B.patient == bindparam("patient")))


def test_prepared_statements_agree_with_sqlalchemy(repo):
    rows = [{"block": f"k{i % 3}", "patient": f"p{i}"} for i in range(7)]
    with repo.unit() as unit:
        _INSERT.many(unit.conn, rows)
        for blocks in (["k0"], ["k0", "k2"], ["k1", "k2", "zz"]):  # IN lists of several lengths
            mine = _IN_BLOCKS.all(unit.conn, {"blocks": blocks})
            theirs = [tuple(r) for r in unit.conn.execute(_IN_BLOCKS.statement, {"blocks": blocks})]
            assert mine == theirs and mine
        assert _FIRST_TWO.all(unit.conn, {"block": "k0"}) == [("p0",), ("p3",)]  # the statement's LIMIT holds
        assert _FIRST_TWO.first(unit.conn, {"block": "nothing"}) is None
        assert _DELETE.run(unit.conn, {"patient": "p0"}) == 1
    with repo.unit(write=False) as unit:  # the writes were part of the unit's transaction and committed
        assert unit.conn.execute(select(func.count()).select_from(t.block)).scalar_one() == 6


def test_prepared_writes_roll_back_with_the_transaction(repo):
    try:
        with repo.unit() as unit:
            _INSERT.run(unit.conn, {"block": "k", "patient": "p"})
            raise RuntimeError("abandon the unit")
    except RuntimeError:
        pass
    with repo.unit(write=False) as unit:
        assert _IN_BLOCKS.all(unit.conn, {"blocks": ["k"]}) == []
