"""Review of break-the-glass accesses: every emergency access is open for review until a reviewer (a role
with the service ``security.break-glass-review`` in data/roles.json) records an outcome and a comment.

A review is a row of ``sec_break_glass_review`` and an audit row (subtype ``review``) in the same
transaction, so the hash-chained trail holds who judged which access, how and why. Listing the events is
itself an access to personal data (residents and reasons) and is audited like a search. Nobody reviews
their own emergency access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, insert, select, update

from changbai.errors import Conflict, Forbidden, InvalidInput, NotFound
from changbai.fhir.values import ms_to_instant
from changbai.security import audit as au
from changbai.security import tables as st
from changbai.security.enforcement import _names, _who
from changbai.security.policy import Principal, now_ms

if TYPE_CHECKING:
    from changbai.security.enforcement import Security

SERVICE = "security.break-glass-review"
OUTCOMES = ("justified", "not-justified")
STATUSES = ("open", "reviewed", "all")


def may_review(p: Principal) -> bool:
    return SERVICE in p.role.services


def list_events(sec: Security, p: Principal, status: str = "open", address: str = "") -> list[dict[str, Any]]:
    """Break-the-glass events (newest first) with the number of flagged reads under each and its review."""
    _require(sec, p, address, "list break-the-glass events")
    if status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", expression="status")
    b, r = st.break_glass.c, st.break_glass_review.c
    q = (
        select(st.break_glass, r.outcome, r.comment, r.reviewer, r.reviewed_at)
        .join_from(st.break_glass, st.break_glass_review, r.id == b.id, isouter=True)
        .order_by(b.id.desc())
        .limit(1000)
    )
    if status == "open":
        q = q.where(r.id.is_(None))
    elif status == "reviewed":
        q = q.where(r.id.is_not(None))
    with sec.db.read() as conn:
        events = [_event(conn, row._mapping) for row in conn.execute(q)]
    row = au.event(
        "search",
        patients=[e["patient"] for e in events],
        detail=f"break-the-glass events ({status})",
        address=address,
        **_who(p),
    )
    sec.trail.record([row])
    return events


def review(sec: Security, p: Principal, event_id: int, outcome: Any, comment: Any, address: str = "") -> dict[str, Any]:
    """Record the outcome of one event's review (once), with the audit row in the same transaction."""
    _require(sec, p, address, f"review break-the-glass event {event_id}")
    if outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}", expression="outcome")
    if not isinstance(comment, str) or not 4 <= len(comment.strip()) <= 2000:
        raise InvalidInput("A review needs a comment (4 to 2000 characters)", expression="comment")
    b, r = st.break_glass.c, st.break_glass_review.c
    with sec.db.write() as conn:
        found = conn.execute(select(st.break_glass).where(b.id == event_id)).first()
        if found is None:
            raise NotFound(f"No break-the-glass event {event_id}")
        if found.username == p.username:
            raise Forbidden("Nobody reviews their own break-the-glass access")
        if conn.execute(select(r.id).where(r.id == event_id)).first() is not None:
            raise Conflict(f"Break-the-glass event {event_id} has been reviewed already")
        now = now_ms()
        conn.execute(
            insert(st.break_glass_review).values(
                id=event_id, outcome=outcome, comment=comment.strip(), reviewer=p.username, reviewed_at=now
            )
        )
        conn.execute(update(st.break_glass).where(b.id == event_id).values(reviewed=True))
        row = au.event(
            "review",
            "0",
            patients=[found.patient],
            detail=f"break-the-glass #{event_id} by {found.username}: {outcome}: {comment.strip()}",
            purpose="HCOMPL",
            address=address,
            **_who(p),
        )
        sec.trail.append(conn, [row])
        mapping = {**found._mapping, "outcome": outcome, "comment": comment.strip(), "reviewer": p.username}
        return _event(conn, {**mapping, "reviewed_at": now})


def _require(sec: Security, p: Principal, address: str, what: str) -> None:
    if may_review(p):
        return
    row = au.event("denied", "4", address=address, detail=f"{what}: not allowed", **_who(p))
    sec.trail.record([row])
    raise Forbidden(f"The role {p.role.name} does not review break-the-glass accesses")


def _event(conn: Connection, row: Any) -> dict[str, Any]:
    a = st.audit.c
    reads = conn.execute(
        select(func.count())
        .select_from(st.audit)
        .where(
            and_(
                a.flagged.is_(True),
                a.username == row["username"],
                a.category != "break-glass",
                a.recorded >= row["started"],
                a.recorded <= row["expires"],
                _names(row["patient"]),
            )
        )
    ).scalar_one()
    out: dict[str, Any] = {
        "id": row["id"],
        "username": row["username"],
        "patient": row["patient"],
        "reason": row["reason"],
        "started": ms_to_instant(row["started"]),
        "expires": ms_to_instant(row["expires"]),
        "reads": reads,
        "review": None,
    }
    if row["outcome"] is not None:
        out["review"] = {
            "outcome": row["outcome"],
            "comment": row["comment"],
            "reviewer": row["reviewer"],
            "at": ms_to_instant(row["reviewed_at"]),
        }
    return out
