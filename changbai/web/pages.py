"""The console's pages: Starlette endpoints that gather data through :mod:`changbai.web.fhirdata` (the FHIR
router, as the signed-in user) and render Jinja2 templates.

Which pages a role is offered is a convenience (``PAGES_BY_ROLE``); what a page shows is decided by the
security module on every FHIR call, never here.
"""

from __future__ import annotations

import base64
import csv
import functools
import secrets
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from changbai import logs
from changbai.errors import ChangbaiError, Forbidden, InvalidInput, NotFound
from changbai.web import charts, session
from changbai.web import fhirdata as fd

if TYPE_CHECKING:
    from changbai.api.app import Platform

log = logs.get(__name__)
HERE = Path(__file__).parent
TEXT: dict[str, dict[str, str]] = {
    k: v for k, v in orjson.loads((HERE / "data" / "text.json").read_bytes()).items() if k != "note"
}
MATCH_LEVELS: dict[str, dict[str, str]] = {
    k: v for k, v in orjson.loads((HERE / "data" / "match_levels.json").read_bytes()).items() if k != "note"
}
STAFF_ROLES = ("clinician", "family_doctor", "nurse", "pharmacist", "facility_admin", "operator", "regulator")
CLINICAL = frozenset({"clinician", "family_doctor", "nurse", "pharmacist"})
#: The navigation each role is offered: (path, text key).
PAGES_BY_ROLE = {
    "resident": [
        ("/console/me", "nav_me"),
        ("/console/me/results", "nav_results"),
        ("/console/me/access", "nav_access"),
        ("/console/me/consent", "nav_consent"),
        ("/console/me/family", "nav_family"),
    ],
    "clinical": [("/console/find", "nav_find")],
    "operator": [
        ("/console/ops", "nav_ops"),
        ("/console/review", "nav_review"),
        ("/console/admin", "nav_admin"),
        ("/console/find", "nav_find"),
    ],
}
VOLUME_TYPES = (
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "MedicationRequest",
    "Immunization",
    "DiagnosticReport",
    "DocumentReference",
    "Claim",
    "Organization",
    "Practitioner",
    "Consent",
)
#: How many of the encounters written last the by-facility tables count, and of today's writes the sources.
ENCOUNTER_SAMPLE = 1000
INGEST_SAMPLE = 200
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
DIV_EXT = "https://changbai.example/fhir/StructureDefinition/address-division"

env = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@functools.cache
def divisions() -> dict[str, str]:
    path = HERE.parent / "terminology" / "data" / "divisions.csv"
    with path.open(encoding="utf-8") as f:
        return {row["code"]: row["name"] for row in csv.DictReader(f)}


class Console:
    """The console bound to one platform."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.sessions = session.SessionStore(platform.db)

    # --------------------------------------------------------------------------------- plumbing
    def lang(self, request: Request) -> str:
        q = request.query_params.get("lang")
        if q in TEXT:
            return q
        c = request.cookies.get("changbai_lang")
        return c if c in TEXT else "zh"

    def role_names(self, request: Request) -> dict[str, str]:
        """Role code -> its name in the user's language (security's policy)."""
        sec = self.platform.security
        if sec is None:
            return {}
        lang = self.lang(request)
        return {r: sec.policy.role(r).display.get(lang, r) for r in sec.policy.roles}

    async def session_of(self, request: Request) -> session.Session | None:
        return await run_in_threadpool(self.sessions.get, request.cookies.get(session.COOKIE))

    def render(
        self, request: Request, name: str, status: int = 200, s: session.Session | None = None, **data: Any
    ) -> Response:
        lang = self.lang(request)
        t = TEXT[lang]
        role = s.role if s and s.access_token else ""
        group = "resident" if role == "resident" else "operator" if role == "operator" else "clinical"
        nav = PAGES_BY_ROLE[group] if role else []
        other = {**dict(request.query_params), "lang": t["other_code"]}
        html = env.get_template(name).render(
            t=t,
            lang=lang,
            s=s if role else None,
            nav=nav,
            path=request.url.path,
            switch=f"{request.url.path}?{urlencode(other)}",
            csrf=s.csrf if s else "",
            security=self.platform.security is not None,
            **data,
        )
        resp = HTMLResponse(html, status_code=status)
        if request.query_params.get("lang") in TEXT:
            resp.set_cookie("changbai_lang", lang, max_age=365 * 86400, httponly=True, samesite="lax")
        return resp

    async def signed_in(self, request: Request) -> tuple[session.Session, fd.Fhir] | None:
        s = await self.session_of(request)
        ctx = await session.current_context(self.platform, request, self.sessions, s)
        if s is None or ctx is None:
            return None
        return s, fd.Fhir(self.platform, ctx)

    async def check_csrf(self, request: Request, s: session.Session) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not secrets.compare_digest(form.get("csrf", ""), s.csrf):
            raise Forbidden("The form is stale or did not come from this console; reload the page")
        return form

    def to_signin(self, request: Request) -> Response:
        return RedirectResponse(f"/console/?{urlencode({'next': request.url.path})}", status_code=303)

    # ----------------------------------------------------------------------------------- sign-in
    async def home(self, request: Request) -> Response:
        got = await self.signed_in(request)
        if got is not None:
            s, _ = got
            start = {"resident": "/console/me", "operator": "/console/ops"}.get(s.role, "/console/find")
            return RedirectResponse(start, status_code=303)
        roles = []
        sec = self.platform.security
        if sec is not None:
            roles = [(r, sec.policy.role(r).display.get(self.lang(request), r)) for r in STAFF_ROLES]
        return self.render(request, "signin.html", roles=roles, error=request.query_params.get("error", ""))

    async def login(self, request: Request) -> Response:
        """Start a sign-in. Signing in again ends the browser's previous session (its tokens revoked)."""
        if self.platform.security is None:
            return self.render(request, "signin.html", roles=[], error="")
        role = request.query_params.get("role", "clinician")
        if role != "resident" and role not in STAFF_ROLES:
            role = "clinician"
        previous = await self.session_of(request)
        if previous is not None:
            await run_in_threadpool(self._end, previous)
        s = self.sessions.new()
        nxt = request.query_params.get("next", "")
        s.next = nxt if nxt.startswith("/console/") else ""
        url = session.authorize_url(self.platform, request, s, role, self.lang(request))
        await run_in_threadpool(self.sessions.save, s)
        resp = RedirectResponse(url, status_code=303)
        self._cookie(request, resp, s)
        return resp

    def _cookie(self, request: Request, resp: Response, s: session.Session) -> None:
        """The session's secret, for this browser's life only (the server ends the session sooner when idle)."""
        resp.set_cookie(
            session.COOKIE, s.id, httponly=True, samesite="lax", path="/", secure=request.url.scheme == "https"
        )

    def _end(self, s: session.Session) -> None:
        session.revoke(self.platform, s)
        self.sessions.drop(s)

    async def callback(self, request: Request) -> Response:
        s = await self.session_of(request)
        q = request.query_params
        if s is None or s.access_token or q.get("error") or not q.get("code"):
            reason = q.get("error_description") or q.get("error") or "the sign-in session expired; try again"
            return RedirectResponse(f"/console/?{urlencode({'error': reason})}", status_code=303)
        try:
            await session.finish_sign_in(self.platform, request, s, q["code"], q.get("state", ""))
        except session.SignInError as exc:
            return RedirectResponse(f"/console/?{urlencode({'error': str(exc)})}", status_code=303)
        # a fresh secret after sign-in (no fixation); the sign-in's own row goes
        fresh = self.sessions.new()
        for key in ("username", "role", "patient", "access_token", "refresh_token", "expires"):
            setattr(fresh, key, getattr(s, key))
        await run_in_threadpool(self.sessions.save, fresh)
        await run_in_threadpool(self.sessions.drop, s)
        resp = RedirectResponse(s.next or "/console/", status_code=303)
        self._cookie(request, resp, fresh)
        return resp

    async def logout(self, request: Request) -> Response:
        """Sign out: the tokens are revoked and the session deleted, so the cookie is worthless afterwards.
        A form without this session's CSRF token signs nobody out."""
        s = await self.session_of(request)
        if s is not None:
            form = await request.form()
            if not secrets.compare_digest(str(form.get("csrf", "")), s.csrf):
                raise Forbidden("The form is stale or did not come from this console; reload the page")
            await run_in_threadpool(self._end, s)
        resp = RedirectResponse("/console/", status_code=303)
        resp.delete_cookie(session.COOKIE, path="/")
        return resp

    # --------------------------------------------------------------------------------- clinician
    async def find(self, request: Request) -> Response:
        got = await self.signed_in(request)
        if got is None:
            return self.to_signin(request)
        s, fhir = got
        q = request.query_params
        pid = q.get("pid", "").strip()
        if pid:
            return RedirectResponse(f"/console/patient/{quote(pid, safe='')}", status_code=303)
        c = fd.Criteria(
            q.get("id_number", "")[:40], q.get("name", "")[:60], q.get("birth_date", "")[:10], q.get("phone", "")[:30]
        )
        c.qr = q.get("qr", "")[:2000]
        found: list[dict[str, Any]] | None = None
        error = ""
        if not c.empty():
            try:
                found = await run_in_threadpool(fd.find, fhir, c)
            except InvalidInput as exc:
                error = TEXT[self.lang(request)].get(exc.message, exc.message)
            except ChangbaiError as exc:
                error = exc.message
        rows = [self._patient_row(p) for p in found or []]
        return self.render(request, "find.html", s=s, c=c, rows=rows, searched=found is not None, error=error)

    def _patient_row(self, p: dict[str, Any]) -> dict[str, Any]:
        system = self.platform.settings.resident_id_system
        return {
            "id": p.get("id"),
            "name": fd.name_of(p),
            "gender": p.get("gender", "unknown"),
            "birth": p.get("birthDate", ""),
            "age": fd.age(p.get("birthDate")),
            "id_number": fd.id_number_of(p, system),
            "phone": next((x.get("value") for x in p.get("telecom") or [] if x.get("system") == "phone"), ""),
            "address": next((a.get("text") or a.get("city", "") for a in p.get("address") or []), ""),
            "org": (p.get("managingOrganization") or {}).get("display", ""),
        }

    async def patient(self, request: Request) -> Response:
        got = await self.signed_in(request)
        if got is None:
            return self.to_signin(request)
        s, fhir = got
        pid = request.path_params["pid"]
        try:
            rec = await run_in_threadpool(fd.load_record, fhir, pid)
        except (NotFound, Forbidden):
            may_btg = bool(getattr(fhir.ctx.principal, "role", None) and fhir.ctx.principal.role.break_glass)
            return self.render(request, "denied.html", status=403, s=s, pid=pid, may_btg=may_btg)
        return self.render(request, "record.html", s=s, **self._record_view(request, rec))

    def _record_view(self, request: Request, rec: fd.Record) -> dict[str, Any]:
        t = TEXT[self.lang(request)]
        pts = fd.series(rec)
        charts_ = [
            ("bp", charts.line_chart(t["bp"] + " (mmHg)", pts["bp"], (t["sbp"], t["dbp"]), (60, 140)), pts["bp"]),
            (
                "glucose",
                charts.line_chart(t["glucose"] + " (mmol/L)", pts["glucose"], ("",), (3.9, 6.1)),
                pts["glucose"],
            ),
            ("hba1c", charts.line_chart(t["hba1c"] + " (%)", pts["hba1c"], ("",), (4.0, 6.0)), pts["hba1c"]),
        ]
        flagged = request.query_params.get("btg") == "1"
        return {
            "p": self._patient_row(rec.patient),
            "summary": fd.summary(rec),
            "timeline": fd.timeline(rec),
            "results": fd.results(rec),
            "charts": [(k, Markup(svg), data) for k, svg, data in charts_],
            "documents": fd.documents(rec),
            "flagged": flagged,
        }

    async def break_glass(self, request: Request) -> Response:
        got = await self.signed_in(request)
        if got is None:
            return self.to_signin(request)
        s, fhir = got
        form = await self.check_csrf(request, s)
        pid = request.path_params["pid"]
        sec = self.platform.security
        address = request.client.host if request.client else ""
        try:
            await run_in_threadpool(sec.break_glass, fhir.ctx.principal, pid, form.get("reason", ""), address)
        except ChangbaiError as exc:
            return self.render(request, "denied.html", status=400, s=s, pid=pid, may_btg=True, error=exc.message)
        return RedirectResponse(f"/console/patient/{pid}?btg=1", status_code=303)

    # ---------------------------------------------------------------------------------- resident
    async def _resident(self, request: Request) -> tuple[session.Session, fd.Fhir] | Response:
        got = await self.signed_in(request)
        if got is None:
            return self.to_signin(request)
        s, fhir = got
        if s.role != "resident" or not s.patient:
            return self.render(request, "message.html", status=403, s=s, message=TEXT[self.lang(request)]["forbidden"])
        return s, fhir

    async def me(self, request: Request) -> Response:
        got = await self._resident(request)
        if isinstance(got, Response):
            return got
        s, fhir = got
        rec = await run_in_threadpool(fd.load_record, fhir, s.patient)
        return self.render(request, "me.html", s=s, **self._record_view(request, rec))

    async def my_results(self, request: Request) -> Response:
        got = await self._resident(request)
        if isinstance(got, Response):
            return got
        s, fhir = got
        rec = await run_in_threadpool(fd.load_record, fhir, s.patient)
        return self.render(request, "my_results.html", s=s, **self._record_view(request, rec))

    async def my_access(self, request: Request) -> Response:
        got = await self._resident(request)
        if isinstance(got, Response):
            return got
        s, fhir = got
        query = [("patient", f"Patient/{s.patient}"), ("_count", "200")]
        events = await run_in_threadpool(fhir.search, "AuditEvent", query)
        t = TEXT[self.lang(request)]
        orgs = await run_in_threadpool(audit_orgs, fhir, events)
        rows = [audit_row(e, t, self.role_names(request), orgs) for e in events]
        rows = group_access([r for r in rows if r["who"] != s.username])
        return self.render(request, "my_access.html", s=s, rows=rows)

    async def my_consent(self, request: Request) -> Response:
        got = await self._resident(request)
        if isinstance(got, Response):
            return got
        s, fhir = got
        error = ""
        if request.method == "POST":
            form = await self.check_csrf(request, s)
            try:
                if form.get("action") == "revoke":
                    await run_in_threadpool(revoke_consent, fhir, form.get("consent", ""), s.patient)
                    return RedirectResponse("/console/me/consent?done=revoked", status_code=303)
                body = consent_resource(
                    s.patient or "", form.get("actor", ""), form.get("start", ""), form.get("end", "")
                )
                fhir.ok(await run_in_threadpool(fhir.call, "POST", "Consent", None, body))
                return RedirectResponse("/console/me/consent?done=granted", status_code=303)
            except ChangbaiError as exc:
                error = exc.message
        consents = await run_in_threadpool(
            fhir.search, "Consent", [("patient", f"Patient/{s.patient}"), ("_count", "100")]
        )
        actors = await run_in_threadpool(actor_names, fhir, consents)
        rows = [consent_row(c, actors) for c in consents]
        rows.sort(key=lambda r: (r["status"] != "active", r["start"]), reverse=False)
        q = request.query_params.get("q", "").strip()[:60]
        choices = await run_in_threadpool(consent_choices, fhir, s.patient or "", q)
        done = request.query_params.get("done", "")
        return self.render(
            request,
            "my_consent.html",
            s=s,
            rows=rows,
            choices=choices,
            q=q,
            error=error,
            done=done if done in ("granted", "revoked") else "",
            today=date.today().isoformat(),
            until=(date.today() + timedelta(days=90)).isoformat(),
        )

    async def my_family(self, request: Request) -> Response:
        got = await self._resident(request)
        if isinstance(got, Response):
            return got
        s, fhir = got
        people = await run_in_threadpool(
            fhir.search, "RelatedPerson", [("patient", f"Patient/{s.patient}"), ("_count", "50")]
        )
        rows = [
            {
                "name": fd.name_of(r),
                "relationship": ", ".join(fd.text_of(c) for c in r.get("relationship") or []),
                "gender": r.get("gender", "unknown"),
                "birth": r.get("birthDate", ""),
                "phone": next((x.get("value") for x in r.get("telecom") or [] if x.get("system") == "phone"), ""),
            }
            for r in people
        ]
        return self.render(request, "my_family.html", s=s, rows=rows)

    # ------------------------------------------------------------------------------------ review
    async def review(self, request: Request) -> Response:
        got = await self.signed_in(request)
        if got is None:
            return self.to_signin(request)
        s, fhir = got
        message = ""
        if request.method == "POST":
            form = await self.check_csrf(request, s)
            message = await run_in_threadpool(review_action, fhir, form)
        resp = await run_in_threadpool(fhir.call, "GET", "Patient/$empi-review", [("status", "open")])
        missing = resp.status == 404 or (resp.status >= 400 and "empi-review" in orjson.dumps(resp.body).decode())
        items: list[dict[str, Any]] = []
        if not missing and resp.status < 400:
            items = await run_in_threadpool(review_items, fhir, resp.body or {}, self)
        elif not missing:
            message = fd._diagnostics(resp.body)
        levels = MATCH_LEVELS[self.lang(request)]
        return self.render(request, "review.html", s=s, items=items, missing=missing, message=message, levels=levels)

    # --------------------------------------------------------------------------------- operator
    async def ops(self, request: Request) -> Response:
        got = await self.signed_in(request)
        if got is None:
            return self.to_signin(request)
        s, fhir = got
        if s.role not in ("operator", "regulator"):
            return self.render(request, "message.html", status=403, s=s, message=TEXT[self.lang(request)]["forbidden"])
        q = request.query_params
        audit_q = [(k, q[k][:100]) for k in ("user", "patient", "outcome", "date") if q.get(k)]
        data = await run_in_threadpool(
            operator_overview, self.platform, fhir, audit_q, TEXT[self.lang(request)], self.role_names(request)
        )
        return self.render(request, "ops.html", s=s, audit_q=dict(audit_q), **data)

    async def admin(self, request: Request) -> Response:
        got = await self.signed_in(request)
        if got is None:
            return self.to_signin(request)
        s, fhir = got
        if s.role != "operator":
            return self.render(request, "message.html", status=403, s=s, message=TEXT[self.lang(request)]["forbidden"])
        from changbai.security.accounts import add_account, list_accounts, new_password

        sec = self.platform.security
        created = error = ""
        if request.method == "POST":
            form = await self.check_csrf(request, s)
            password = new_password()
            try:
                await run_in_threadpool(
                    functools.partial(
                        add_account,
                        sec.db,
                        sec.policy,
                        form.get("username", ""),
                        form.get("role", ""),
                        password=password,
                        organization=form.get("organization") or None,
                        display=form.get("display", "")[:200],
                    )
                )
                created = f"{form.get('username')}: {password}"
            except ChangbaiError as exc:
                error = exc.message
        accounts = [a for a in await run_in_threadpool(list_accounts, sec.db) if a["kind"] == "user"]
        roles = [(r, sec.policy.role(r).display.get(self.lang(request), r)) for r in sorted(sec.policy.roles)]
        facilities = await run_in_threadpool(
            fhir.bundle, "Organization", [("_count", "30"), ("_elements", "name,type,address"), ("_total", "accurate")]
        )
        orgs = [e["resource"] for e in facilities.get("entry", [])]
        theirs = {a["organization"] for a in accounts if a.get("organization")}
        org_names = await run_in_threadpool(organization_names, fhir, theirs)
        return self.render(
            request,
            "admin.html",
            s=s,
            accounts=accounts,
            roles=roles,
            orgs=orgs,
            org_total=facilities.get("total", len(orgs)),
            org_names=org_names,
            role_names=self.role_names(request),
            created=created,
            error=error,
        )


# ------------------------------------------------------------------------------------------ helpers
#: The province's clock: China Standard Time (the country's one time zone); audit times are stored in UTC.
CST = timezone(timedelta(hours=8))


def local_time(instant: str) -> str:
    """An instant (``...Z`` or with an offset) as Beijing time, ``YYYY-MM-DD HH:MM:SS``."""
    try:
        return datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return instant[:19].replace("T", " ")


def audit_row(e: dict[str, Any], t: dict[str, str], roles: dict[str, str], orgs: dict[str, str]) -> dict[str, Any]:
    """One AuditEvent for people to read: who (role and facility by name), did what, when (Beijing time)."""
    agent = (e.get("agent") or [{}])[0]
    who = (agent.get("who") or {}).get("display") or (agent.get("who") or {}).get("identifier", {}).get("value", "")
    role = ", ".join(fd.text_of(r) for r in agent.get("role") or [] if fd.text_of(r))
    org = ((agent.get("location") or {}).get("reference") or "").removeprefix("Organization/")
    category = fd.code_of({"coding": e.get("subtype") or []}) or ""
    purpose = ", ".join(fd.text_of(p) or fd.code_of(p) or "" for p in e.get("purposeOfEvent") or [])
    flagged = any(tag.get("code") == "BTG" for tag in (e.get("meta") or {}).get("tag") or []) or "BTG" in purpose
    outcome = str(e.get("outcome", ""))
    return {
        "when": local_time(e.get("recorded") or ""),
        "who": t["the_platform"] if who == "(platform)" else who,
        "role": roles.get(role, role),
        "org": orgs.get(org, org),
        "action": t.get(f"act_{category}", category),
        "what": _request_of(e),
        "purpose": purpose,
        "outcome": t.get(f"out_{outcome}", outcome),
        "ok": outcome == "0",
        "flagged": flagged,
    }


def _request_of(e: dict[str, Any]) -> str:
    """What was asked, as the request line the trail keeps (with its query, for searches)."""
    detail = str(e.get("outcomeDesc") or "")
    for x in e.get("entity") or []:
        if x.get("query"):
            try:
                return f"{detail}?{base64.b64decode(x['query']).decode()}"[:300]
            except ValueError:
                break
    return detail[:300]


def audit_orgs(fhir: fd.Fhir, events: list[dict[str, Any]]) -> dict[str, str]:
    """Names of the facilities the audited people acted for (one search; their ids when it fails)."""
    ids = {
        ((a.get("location") or {}).get("reference") or "").removeprefix("Organization/")
        for e in events
        for a in e.get("agent") or []
    } - {""}
    try:
        return organization_names(fhir, ids)
    except ChangbaiError:
        return {}


def organization_names(fhir: fd.Fhir, ids: set[str]) -> dict[str, str]:
    """Organization id -> its name (the id where it has none), for up to 100 ids in one search."""
    if not ids:
        return {}
    query = [("_id", ",".join(sorted(ids)[:100])), ("_count", "100"), ("_elements", "name")]
    return {o["id"]: o.get("name") or o["id"] for o in fhir.search("Organization", query)}


def group_access(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A resident's access list: the same person doing the same kind of thing on the same day is one line
    with a count (a page view is several reads), newest first."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = (r["who"], r["role"], r["org"], r["action"], r["outcome"], r["flagged"], r["purpose"], r["when"][:10])
        if key in out:
            out[key]["count"] += 1
        else:
            out[key] = {**r, "count": 1}
    return list(out.values())


def consent_resource(patient: str, actor: str, start: str, end: str) -> dict[str, Any]:
    """A resident's authorisation: ``actor`` (Organization/x or Practitioner/y) may read their whole record
    from ``start`` to ``end`` (dates)."""
    kind, _, ident = actor.partition("/")
    if kind not in ("Organization", "Practitioner") or not ident:
        raise InvalidInput("Choose a facility or a doctor to authorise")
    for value in (start, end):
        try:
            date.fromisoformat(value)
        except ValueError:
            raise InvalidInput("The period needs a start and an end date (YYYY-MM-DD)") from None
    if end < start:
        raise InvalidInput("The end date is before the start date")
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": start, "end": end},
            "actor": [
                {
                    "role": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}
                        ]
                    },
                    "reference": {"reference": actor},
                }
            ],
        },
    }


def consent_choices(fhir: fd.Fhir, patient: str, q: str) -> list[tuple[str, str]]:
    """Whom a resident may authorise: facilities and doctors matching ``q``, else the facilities that have
    treated them (from their own encounters)."""
    if q:
        orgs = fhir.search("Organization", [("name", q), ("_count", "20"), ("_elements", "name")])
        docs = fhir.search("Practitioner", [("name", q), ("_count", "10"), ("_elements", "name")])
        return [(f"Organization/{o['id']}", o.get("name") or o["id"]) for o in orgs] + [
            (f"Practitioner/{d['id']}", fd.name_of(d)) for d in docs
        ]
    seen: dict[str, str] = {}
    for e in fhir.search(
        "Encounter", [("patient", f"Patient/{patient}"), ("_count", "200"), ("_elements", "serviceProvider")]
    ):
        sp = e.get("serviceProvider") or {}
        if (sp.get("reference") or "").startswith("Organization/"):
            seen.setdefault(sp["reference"], sp.get("display") or sp["reference"])
    return list(seen.items())


def revoke_consent(fhir: fd.Fhir, cid: str, patient: str | None) -> None:
    """Revoking keeps the authorisation's history: the Consent becomes inactive (a new version)."""
    current = fhir.read("Consent", cid)
    if (current.get("patient") or {}).get("reference") != f"Patient/{patient}":
        raise NotFound(f"Consent/{cid} is not known")
    current["status"] = "inactive"
    fhir.ok(fhir.call("PUT", f"Consent/{cid}", None, current))


def actor_names(fhir: fd.Fhir, consents: list[dict[str, Any]]) -> dict[str, str]:
    refs: dict[str, set[str]] = {"Organization": set(), "Practitioner": set()}
    for c in consents:
        for a in (c.get("provision") or {}).get("actor") or []:
            kind, _, ident = ((a.get("reference") or {}).get("reference") or "").partition("/")
            if kind in refs and ident:
                refs[kind].add(ident)
    names: dict[str, str] = {}
    for kind, ids in refs.items():
        if ids:
            for r in fhir.search(kind, [("_id", ",".join(sorted(ids)[:100])), ("_count", "100")]):
                names[f"{kind}/{r['id']}"] = r.get("name") if isinstance(r.get("name"), str) else fd.name_of(r)
    return names


def consent_row(c: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    prov = c.get("provision") or {}
    actors = [((a.get("reference") or {}).get("reference") or "") for a in prov.get("actor") or []]
    return {
        "id": c.get("id"),
        "actor": ", ".join(names.get(a, a) for a in actors),
        "start": (prov.get("period") or {}).get("start", ""),
        "end": (prov.get("period") or {}).get("end", ""),
        "status": c.get("status", ""),
    }


def review_items(fhir: fd.Fhir, body: dict[str, Any], console: Console) -> list[dict[str, Any]]:
    out = []
    for item in (body.get("parameter") or [])[:25]:
        parts = {p["name"]: p for p in item.get("part") or []}
        a = (parts.get("patient", {}).get("valueReference") or {}).get("reference", "").split("/")[-1]
        b = (parts.get("candidate", {}).get("valueReference") or {}).get("reference", "").split("/")[-1]
        levels = [(n.removeprefix("level-"), p.get("valueCode")) for n, p in parts.items() if n.startswith("level-")]
        pair = []
        for pid in (a, b):
            try:
                pair.append(console._patient_row(fhir.read("Patient", pid)))
            except ChangbaiError:
                pair.append({"id": pid, "name": "?"})
        out.append(
            {
                "a": pair[0],
                "b": pair[1],
                "probability": parts.get("probability", {}).get("valueDecimal", 0),
                "levels": levels,
            }
        )
    return out


def _params(**values: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": k, "valueString": v} for k, v in values.items()],
    }


def review_action(fhir: fd.Fhir, form: dict[str, str]) -> str:
    """Link, not-duplicate, merge or unmerge through the identity module's operations."""
    action, a, b = form.get("action", ""), form.get("a", ""), form.get("b", "")
    calls = {
        "link": ("Patient/$empi-link", _params(patient=a, other=b)),
        "not-duplicate": ("Patient/$empi-not-duplicate", _params(patient=a, other=b)),
        "merge": ("Patient/$empi-merge", _params(source=a, target=b)),
        "unmerge": ("Patient/$empi-unmerge", _params(merge=form.get("merge", ""))),
    }
    if action not in calls:
        return "unknown action"
    path, body = calls[action]
    resp = fhir.call("POST", path, None, body)
    if resp.status >= 400:
        return fd._diagnostics(resp.body)
    merge = next(
        (p.get("valueString") for p in (resp.body or {}).get("parameter", []) if p.get("name") == "merge"), None
    )
    return f"{action}: OK" + (f" (merge id {merge})" if merge else "")


def operator_overview(
    platform: Platform, fhir: fd.Fhir, audit_q: list[tuple[str, str]], t: dict[str, str], roles: dict[str, str]
) -> dict[str, Any]:
    started = time.perf_counter()
    volume = []
    for rtype in VOLUME_TYPES:
        try:
            volume.append((rtype, fhir.bundle(rtype, [("_summary", "count")]).get("total", 0)))
        except ChangbaiError:
            continue
    # encounters by facility, county and city, from the encounters written last (sorting a big store by
    # when they happened took a second), without a total (the volume table counted them already)
    encounters = fhir.search(
        "Encounter",
        [
            ("_count", str(ENCOUNTER_SAMPLE)),
            ("_sort", "-_lastUpdated"),
            ("_elements", "serviceProvider"),
            ("_total", "none"),
        ],
    )
    by_org: Counter[str] = Counter()
    names: dict[str, str] = {}
    for e in encounters:
        sp = e.get("serviceProvider") or {}
        org = (sp.get("reference") or "").split("/")[-1] or fd.holder(e) or "?"
        by_org[org] += 1
        names.setdefault(org, sp.get("display") or org)
    top = by_org.most_common(15)
    county: Counter[str] = Counter()
    city: Counter[str] = Counter()
    ids = [o for o in by_org if o != "?"]
    for i in range(0, len(ids), 100):
        for o in fhir.search("Organization", [("_id", ",".join(ids[i : i + 100])), ("_count", "100")]):
            code = _division(o)
            if code:
                county[code[:6]] += by_org[o["id"]]
                city[code[:4] + "00"] += by_org[o["id"]]
    div = divisions()
    today = datetime.now(CST).date().isoformat()
    ingest: Counter[str] = Counter()
    sampled = 0
    try:
        recent = fhir.bundle(
            "",
            [
                ("_lastUpdated", f"ge{today}T00:00:00+08:00"),
                ("_sort", "-_lastUpdated"),
                ("_count", str(INGEST_SAMPLE)),
                ("_elements", "id"),
                ("_total", "none"),
            ],
        )
        sampled = len(recent.get("entry", []))
        for e in recent.get("entry", []):
            r = e.get("resource") or {}
            src = (r.get("meta") or {}).get("source") or t["no_source"]
            ingest[src.split("#")[0][:80]] += 1
    except ChangbaiError:
        pass
    failed, inbox_ok = inbox_failures(platform)
    lag = federation_lag(platform)
    audit: list[dict[str, Any]] = []
    audit_error = ""
    try:
        events = fhir.search("AuditEvent", [*audit_q, ("_count", "20"), ("_total", "none")])
        orgs = audit_orgs(fhir, events)
        audit = [audit_row(e, t, roles, orgs) for e in events]
    except ChangbaiError as exc:
        audit_error = exc.message
    log.info("operator overview", extra={"fields": {"seconds": round(time.perf_counter() - started, 3)}})
    return {
        "volume": volume,
        "by_facility": [(names.get(o, o), n) for o, n in top],
        "sampled": len(encounters),
        "by_county": [(div.get(c, c), n) for c, n in county.most_common(12)],
        "by_city": [(div.get(c, c), n) for c, n in city.most_common()],
        "ingest": ingest.most_common(10),
        "ingest_capped": sampled >= INGEST_SAMPLE,
        "ingest_sampled": sampled,
        "failed": failed,
        "inbox_ok": inbox_ok,
        "lag": lag,
        "audit": audit,
        "audit_error": audit_error,
    }


def _division(org: dict[str, Any]) -> str | None:
    for a in org.get("address") or []:
        for ext in a.get("extension") or []:
            if ext.get("url") == DIV_EXT:
                code = (ext.get("valueCoding") or {}).get("code")
                if code and len(code) >= 6:
                    return str(code)
    return None


def inbox_failures(platform: Platform) -> tuple[list[dict[str, Any]], bool]:
    """Dead letters of the exchange inbox (status error or rejected), through its public SqlInbox."""
    try:
        from changbai.exchange.inbox import SqlInbox
    except ImportError:
        return [], False
    try:
        inbox = SqlInbox(platform.repo)
        rows = [*inbox.list("error", 20), *inbox.list("rejected", 20)]
    except Exception:
        log.exception("exchange inbox not readable")
        return [], False
    return [
        {
            "id": r.id,
            "status": r.status,
            "sender": r.sender,
            "event": r.event,
            "received": str(r.received_at)[:19],
            "problem": "; ".join(str(p) for p in (r.problems or [])[:2])[:200],
        }
        for r in rows
    ], True


def federation_lag(platform: Platform) -> list[dict[str, Any]]:
    try:
        from changbai.exchange.federation import cursors
    except ImportError:
        return []
    try:
        rows = cursors.all_cursors(platform.db)
    except Exception:
        log.exception("federation cursors not readable")
        return []
    now = cursors.now_ms()
    out = []
    for r in rows:
        last = r.last_success or 0
        out.append(
            {
                "name": r.name,
                "lag": f"{(now - last) / 1000:.0f} s" if last else "—",
                "sent": r.sent,
                "failures": r.failures,
                "error": (r.last_error or "")[:120],
            }
        )
    return out
