"""What an operator sees and does: queue depth and failures per subscription, the dead-letter list,
replay. Shared by the HTTP operator API and the `changbai subscriptions` command."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, select, update

from changbai.exchange.subscriptions import tables as st
from changbai.exchange.subscriptions.queue import now_ms
from changbai.store.database import Database

_D = st.delivery.c


def status(db: Database) -> dict[str, Any]:
    now = now_ms()
    with db.read() as conn:
        rows = conn.execute(
            select(
                _D.subscription,
                func.sum(case((_D.status == "pending", 1), else_=0)).label("pending"),
                func.sum(case((_D.status == "delivered", 1), else_=0)).label("delivered"),
                func.sum(case((_D.status == "dead", 1), else_=0)).label("dead"),
                func.min(case((_D.status == "pending", _D.created), else_=None)).label("oldest"),
                func.max(case((_D.status == "pending", _D.attempts), else_=0)).label("attempts"),
            ).group_by(_D.subscription)
        ).all()
        errors = dict(
            conn.execute(
                select(_D.subscription, func.max(_D.last_error))
                .where(_D.status == "pending", _D.attempts > 0)
                .group_by(_D.subscription)
            ).all()
        )
    subs = [
        {
            "subscription": r.subscription,
            "queueDepth": int(r.pending or 0),
            "delivered": int(r.delivered or 0),
            "deadLetters": int(r.dead or 0),
            "oldestPendingSeconds": round((now - r.oldest) / 1000, 3) if r.oldest else 0.0,
            "attemptsOnHead": int(r.attempts or 0),
            "lastError": errors.get(r.subscription),
        }
        for r in rows
    ]
    return {
        "queueDepth": sum(s["queueDepth"] for s in subs),
        "deadLetters": sum(s["deadLetters"] for s in subs),
        "subscriptions": subs,
    }


def dead_letters(db: Database, subscription: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    q = select(st.delivery).where(_D.status == "dead").order_by(_D.seq).limit(limit)
    if subscription:
        q = q.where(_D.subscription == subscription)
    with db.read() as conn:
        return [
            {
                "id": r.seq,
                "subscription": r.subscription,
                "event": r.event,
                "resource": f"{r.rtype}/{r.id}/_history/{r.version}",
                "action": r.action,
                "attempts": r.attempts,
                "lastError": r.last_error,
                "created": r.created,
            }
            for r in conn.execute(q)
        ]


def replay(db: Database, ids: list[int] | None = None, subscription: str | None = None) -> int:
    """Put dead letters back in the queue (all, some ids, or one subscription's); returns how many.

    They go out again in their original event order; a fresh give-up window starts now."""
    cond = [_D.status == "dead"]
    if ids:
        cond.append(_D.seq.in_(ids))
    if subscription:
        cond.append(_D.subscription == subscription)
    now = now_ms()
    with db.write() as conn:
        result = conn.execute(
            update(st.delivery).where(and_(*cond)).values(status="pending", attempts=0, next_attempt=now, created=now)
        )
        return int(result.rowcount or 0)
