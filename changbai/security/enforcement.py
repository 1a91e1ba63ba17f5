"""Enforcement: the security module's steps on the store's pipeline and its guard around the router.

- ``prepare`` step ``authorise``: scope and write rule of the principal, access labels, field protection;
- ``commit`` step ``audit``: the write's audit row, in the write's transaction; treatment rows;
- ``read`` step ``authorise``: scope, grants (labels, consent, break-the-glass), audit, reveal or mask;
- ``search`` step ``authorise``: scope, the grants as SQL (``request.restrictions``, also inside chains
  and ``_has``) so that matches, includes and counts only ever see what the reader may see;
- the router guard: interactions the pipeline does not see (history, AuditEvent, system operations),
  and one durable audit row per request for reads and refusals.

A context whose principal is None is the platform itself (CLI, HL7 v2 intake, federation); HTTP requests
always carry a principal (see :mod:`changbai.security.oauth`).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, and_, bindparam, false, insert, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from changbai import logs
from changbai.errors import ChangbaiError, Forbidden, InvalidInput, MethodNotAllowed, NotFound
from changbai.security import audit as au
from changbai.security import policy as pol
from changbai.security import tables as st
from changbai.security.fields import FieldProtector
from changbai.security.keys import KeyStore
from changbai.security.policy import Grants, Principal, now_ms
from changbai.security.tokens import Tokens
from changbai.store import schema as t
from changbai.store.pipeline import Context, WriteOp
from changbai.store.prepared import Prepared

if TYPE_CHECKING:
    from changbai.api.app import Platform
    from changbai.api.router import FhirRequest, FhirResponse
    from changbai.store.search import SearchRequest

log = logs.get(__name__)
R = t.resource.c
LETTER = {"create": "c", "update": "u", "patch": "u", "delete": "d"}
PROTECTED_PARAMS = {"identifier": "id", "phone": "phone", "telecom": "phone"}
BREAK_GLASS_MINUTES = 60
#: How long one principal's grants are reused within this process (a Consent or break-the-glass written
#: here invalidates them at once; other processes see the change within this time).
GRANTS_SECONDS = 5.0


_TREATED_VALUES = {c: bindparam(c) for c in ("organization", "patient", "since")}
# a write names the facility that treats the resident: kept once (every write of a bulk load runs it)
_TREATED_SQLITE = Prepared(insert(st.treatment).prefix_with("OR IGNORE").values(_TREATED_VALUES))
_TREATED_PG = Prepared(pg_insert(st.treatment).values(_TREATED_VALUES).on_conflict_do_nothing())


class Security:
    """Everything the module holds for one platform: keys, policy, tokens, audit trail, caches."""

    def __init__(self, platform: Platform) -> None:
        settings = platform.settings
        self.platform = platform
        self.db = platform.db
        self.keys = KeyStore(settings.data_dir / "keys")
        self.policy = pol.load_policy()
        self.protector = FieldProtector(self.keys.field_key, settings.resident_id_system)
        self.trail = au.AuditTrail(self.db, self.keys.audit_key, self.keys.dir / "audit.anchor")
        self.tokens = Tokens(self.db, self.keys)
        self.org_region: dict[str, str | None] = {}
        self.treated: set[tuple[str, str]] = set()
        #: grants by principal, reused for GRANTS_SECONDS unless a Consent or break-the-glass changes them
        self._grants: dict[tuple[Any, ...], tuple[float, int, Grants]] = {}
        self.generation = 0

    # ---------------------------------------------------------------------------------- principals
    def principal(self, claims: dict[str, Any]) -> Principal:
        from changbai.security import scopes as sc

        role = self.policy.role(str(claims.get("role")))
        resource_scopes, _ = sc.parse(str(claims.get("scope", "")))
        return Principal(
            username=str(claims.get("sub")),
            role=role,
            scopes=resource_scopes,
            kind=str(claims.get("kind", "user")),
            organization=claims.get("organization"),
            practitioner=claims.get("practitioner"),
            patient=claims.get("patient"),
            region=claims.get("region"),
            client_id=str(claims.get("client_id", "")),
            jti=str(claims.get("jti", "")),
            purpose=claims.get("purpose_of_use") or None,
        )

    def issue_token(
        self, account: dict[str, Any], scope: str, audience: str, *, purpose: str | None = None, **kw: Any
    ) -> tuple[str, int]:
        """An access token for ``account``, for a purpose of use its role may act with (or none)."""
        pol.check_purpose(self.policy.role(account["role"]), purpose)
        return self.tokens.issue(account, scope, audience, purpose=purpose, **kw)

    # ------------------------------------------------------------------------------------- denials
    def _deny(self, ctx: Context, exc: ChangbaiError, entity: str = "", patient: str = "") -> ChangbaiError:
        ctx.extras.setdefault("sec_denied", []).append((entity, patient, exc.message))
        return exc

    # --------------------------------------------------------------------------------------- writes
    def prepare(self, conn: Connection, ctx: Context, op: WriteOp) -> None:
        p: Principal | None = ctx.principal
        if p is not None:
            self._authorise_write(conn, ctx, p, op)
        if op.resource is not None:
            op.resource = dict(op.resource)  # labels and protected fields never alter the caller's dict
            labels = self._labels(conn, p, op.rtype, op.resource)
            pol.apply_labels(op.resource, labels)
            self.protector.protect(op.resource, op.previous)

    def _authorise_write(self, conn: Connection, ctx: Context, p: Principal, op: WriteOp) -> None:
        entity = f"{op.rtype}/{op.id}"
        if not p.may(op.rtype, LETTER[op.action]):
            raise self._deny(ctx, Forbidden(f"Your scopes do not allow {op.action} on {op.rtype}"), entity)
        rule = p.role.write
        if rule == "all":
            return
        if rule == "none":
            raise self._deny(ctx, Forbidden(f"The role {p.role.name} does not write records"), entity)
        previous = pol.read_labels(op.previous) if op.previous is not None else None
        new_patient = pol.patient_of(op.resource, op.rtype) if op.resource is not None else None
        if op.rtype == "Consent" and not (rule == "own-consent" and p.patient):
            raise self._deny(
                ctx,
                Forbidden("Only the resident (or a platform operator) records the resident's authorisations"),
                entity,
            )
        if rule == "own-consent":
            own = p.patient
            if op.rtype != "Consent":
                raise self._deny(ctx, Forbidden("Residents write only their own authorisations (Consent)"), entity)
            if op.resource is not None and new_patient != own:
                raise self._deny(ctx, Forbidden("A resident authorises access to their own record only"), entity)
            if previous is not None and own not in previous.get(pol.SYS_PATIENT, set()):
                raise self._deny(ctx, NotFound(f"{entity} is not known"), entity)
            return
        # facility: records the principal's facility holds
        if not p.organization:
            raise self._deny(ctx, Forbidden("Your account acts for no facility, so it cannot write records"), entity)
        if previous is not None and p.organization not in previous.get(pol.SYS_FACILITY, set()):
            raise self._deny(ctx, Forbidden(f"{entity} is held by another facility"), entity)

    def _labels(self, conn: Connection, p: Principal | None, rtype: str, resource: dict[str, Any]) -> pol.Labels:
        if rtype == "Organization" and resource.get("id"):
            self.org_region[resource["id"]] = pol.division_of(resource)
        acting = p.organization if p is not None and p.organization and p.role.write == "facility" else None
        facility = acting or pol.holder_of(resource, rtype)
        patient = pol.patient_of(resource, rtype)
        regions = pol.region_codes(self._org_region(conn, facility)) if facility else []
        care: list[str] = []
        home: list[str] = []
        if rtype == "Patient":
            home = pol.region_codes(pol.division_of(resource))
            for path in pol.label_rules()["care_paths"]:
                for ref in resource.get(path) or []:
                    for kind in ("Practitioner", "Organization"):
                        found = pol.ref_id(ref, kind)
                        if found:
                            care.append(f"{kind}/{found}")
        personal = rtype in pol.personal_types()
        return pol.Labels(
            personal, patient if personal else None, facility, regions, care, pol.sensitivity(resource), home
        )

    def _current_content(self, conn: Connection, rtype: str, id: str) -> dict[str, Any] | None:
        v = t.resource_version.c
        row = conn.execute(
            select(v.content)
            .join_from(t.resource, t.resource_version, and_(v.rid == R.rid, v.version == R.version))
            .where(R.rtype == rtype, R.id == id)
        ).first()
        return orjson.loads(row[0]) if row and row[0] else None

    def _org_region(self, conn: Connection, org: str) -> str | None:
        if org not in self.org_region:
            content = self._current_content(conn, "Organization", org)
            self.org_region[org] = pol.division_of(content) if content else None
        return self.org_region[org]

    def commit(self, conn: Connection, ctx: Context, op: WriteOp) -> None:
        if op.rtype in ("Consent", "Patient"):
            self.generation += 1  # authorisations or family-doctor contracts changed: recompute grants
        labels = pol.read_labels(op.resource or op.previous or {})
        patients = labels.get(pol.SYS_PATIENT, set())
        for org in labels.get(pol.SYS_FACILITY, set()):
            for pid in patients:
                if (org, pid) not in self.treated:
                    self._insert_treatment(conn, org, pid)
                    self.treated.add((org, pid))
        p: Principal | None = ctx.principal
        row = au.event(
            op.action,
            patients=patients,
            entities=[f"{op.rtype}/{op.id}/_history/{op.version}"],
            detail=f"{ctx.source}",
            purpose=ctx.purpose or "",
            address=ctx.client_address or "",
            **_who(p),
        )
        self.trail.append(conn, [row], ctx.extras.setdefault("sec_chain", {}))
        if op.resource is not None:
            op.resource = self.protector.revealed(op.resource)

    def _insert_treatment(self, conn: Connection, org: str, pid: str) -> None:
        statement = _TREATED_SQLITE if self.db.is_sqlite else _TREATED_PG
        statement.run(conn, {"organization": org, "patient": pid, "since": now_ms()})

    # ---------------------------------------------------------------------------------------- grants
    def grants(self, conn: Connection, ctx: Context, p: Principal) -> Grants:
        cached = ctx.extras.get("sec_grants")
        if cached is not None and cached[0] is p:
            return cached[1]
        key = (p.username, p.role.name, p.organization, p.practitioner, p.patient, p.region, ctx.purpose)
        now = time.monotonic()
        hit = self._grants.get(key)
        if hit is not None and hit[1] == self.generation and now - hit[0] < GRANTS_SECONDS:
            ctx.extras["sec_grants"] = (p, hit[2])
            return hit[2]
        g = self._compute_grants(conn, ctx, p)
        if len(self._grants) > 10000:
            self._grants.clear()
        self._grants[key] = (now, self.generation, g)
        ctx.extras["sec_grants"] = (p, g)
        return g

    def _compute_grants(self, conn: Connection, ctx: Context, p: Principal) -> Grants:
        g = Grants()
        reach = p.reach
        if "all" in reach:
            g.all = True
        if "facility" in reach and p.organization:
            g.facilities.add(p.organization)
        if "treated" in reach and p.organization:
            g.treated_by = p.organization
        if "care" in reach:
            g.care = [f"Practitioner/{p.practitioner}"] if p.practitioner else []
            if p.organization:
                g.care.append(f"Organization/{p.organization}")
        if "region" in reach and p.region:
            g.regions.add(p.region)
        if "own" in reach and p.patient:
            g.add_patient(p.patient, frozenset())
        if "consent" in reach:
            self._consent_grants(conn, ctx, p, g)
        if "break_glass" in reach:
            b = st.break_glass.c
            rows = conn.execute(select(b.patient).where(b.username == p.username, b.expires > now_ms())).all()
            g.break_glass = {r.patient for r in rows}
        return g

    def _consent_grants(self, conn: Connection, ctx: Context, p: Principal, g: Grants) -> None:
        """The residents who authorised this reader by name (its practitioner or facility), or authorised
        the purpose of use the reader acts with."""
        actors = []
        if p.practitioner:
            actors.append(("Practitioner", p.practitioner))
        if p.organization:
            actors.append(("Organization", p.organization))
        c, k = t.idx_reference.c, t.idx_token.c
        found = []
        if actors:
            found.append(
                select(c.rid).where(
                    c.rtype == "Consent", c.param == "actor", tuple_(c.target_type, c.target_id).in_(actors)
                )
            )
        if ctx.purpose:
            found.append(select(k.rid).where(k.rtype == "Consent", k.param == "purpose", k.code == ctx.purpose))
        if not found:
            return
        v = t.resource_version.c
        rows = conn.execute(
            select(v.content)
            .join_from(t.resource, t.resource_version, and_(v.rid == R.rid, v.version == R.version))
            .where(R.rtype == "Consent", R.deleted == false(), or_(*(R.rid.in_(q) for q in found)))
        ).all()
        now = now_ms()
        for (content,) in rows:
            consent = orjson.loads(content)
            permitted = consent_permits(consent, actors, now, ctx.purpose)
            if permitted is not None:
                g.add_patient(*permitted)

    def _visible(self, conn: Connection, ctx: Context, p: Principal, rtype: str, resource: dict[str, Any]) -> bool:
        return self._decide(conn, ctx, p, rtype, resource)[0]

    def _decide(
        self, conn: Connection, ctx: Context, p: Principal, rtype: str, resource: dict[str, Any]
    ) -> tuple[bool, dict[str, set[str]]]:
        """(may the principal see this record, its labels). A search asks twice for each record it returns
        (its ``visible`` filter, then the read step), so the answer is kept for the request, pinned to the
        very dict it was given for (the entry holds the dict, so its ``id`` cannot be reused meanwhile)."""
        seen = ctx.extras.setdefault("sec_seen", {})
        hit = seen.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        labels = pol.read_labels(resource)
        if not (p.may(rtype, "r") or p.may(rtype, "s")):
            decided = False
        else:
            grants = self.grants(conn, ctx, p)
            quick = pol.quick_check(grants, labels)
            decided = quick if quick is not None else self._ask_database(conn, ctx, grants, rtype, resource, labels)
        seen[id(resource)] = (resource, (decided, labels))
        return decided, labels

    def _ask_database(
        self,
        conn: Connection,
        ctx: Context,
        grants: Grants,
        rtype: str,
        resource: dict[str, Any],
        labels: dict[str, set[str]],
    ) -> bool:
        """Only the database can tell: whether one of the record's residents is treated by the reader's
        facility, in their care or living in their area. That depends on the resident (and the type), not
        on the record, so within a request it is asked once per resident and type, not once per record of
        a whole chart."""
        patients = sorted(labels.get(pol.SYS_PATIENT, ()))
        memo = ctx.extras.get("sec_patient_visible")
        if memo is None or memo[0] is not grants:  # grants recomputed: what was known is forgotten
            memo = ctx.extras["sec_patient_visible"] = (grants, {})
        known: dict[tuple[str, str], bool] = memo[1]
        if any(known.get((rtype, pid)) for pid in patients):
            return True
        if patients and all(known.get((rtype, pid)) is False for pid in patients):
            return False
        cond = pol.condition(grants, [rtype])
        decided = (
            conn.execute(select(R.rid).where(R.rtype == rtype, R.id == resource.get("id"), cond)).first() is not None
        )
        if not decided:
            known.update({(rtype, pid): False for pid in patients})
        elif len(patients) == 1:
            known[(rtype, patients[0])] = True
        return decided

    # ----------------------------------------------------------------------------------------- reads
    def read(self, conn: Connection, ctx: Context, rtype: str, resource: dict[str, Any]) -> None:
        p: Principal | None = ctx.principal
        if p is None:
            self.protector.reveal(resource, True)
            return
        visible, labels = self._decide(conn, ctx, p, rtype, resource)
        patients = labels.get(pol.SYS_PATIENT, set())
        entity = f"{rtype}/{resource.get('id')}"
        if not (p.may(rtype, "r") or p.may(rtype, "s")):
            raise self._deny(ctx, Forbidden(f"Your scopes do not allow reading {rtype}"), entity, " ".join(patients))
        if not visible:
            raise self._deny(ctx, NotFound(f"{entity} is not known"), entity, " ".join(patients))
        log_ = ctx.extras.get("sec_read")
        if log_ is None:
            log_ = ctx.extras["sec_read"] = {"entities": set(), "patients": set(), "flagged": False}
        log_["entities"].add(entity)
        if patients:
            log_["patients"] |= patients
            if patients & self.grants(conn, ctx, p).break_glass:
                log_["flagged"] = True
        own = p.patient is not None and p.patient in patients and p.role.name == "resident"
        self.protector.reveal(resource, p.role.identifiers == "full" or own)

    # -------------------------------------------------------------------------------------- searches
    def search(self, conn: Connection, ctx: Context, request: SearchRequest) -> None:
        self._rewrite_protected(request)
        p: Principal | None = ctx.principal
        if p is None:
            return
        types = [request.rtype] if request.rtype else list(request.types)
        allowed = [ty for ty in types if p.may(ty, "s")]
        if not allowed:
            what = request.rtype or "these types"
            raise self._deny(ctx, Forbidden(f"Your scopes do not allow searching {what}"), what)
        grants = self.grants(conn, ctx, p)
        if grants.all:
            if len(allowed) < len(types):
                request.restrictions.append(R.rtype.in_(allowed))
        else:  # a rid filter, so that index-only counts and candidate sets apply it too
            request.rid_filters.append(pol.label_filter(grants, allowed if len(allowed) < len(types) else None))
        request.visible = lambda rtype, res: self._visible(conn, ctx, p, rtype, res)
        self._secure_nested(request, grants)

    def _rewrite_protected(self, request: SearchRequest) -> None:
        """identifier=<resident-id system>|<number> and phone=<number> become blind-index tokens."""
        from changbai.store.search import Clause, _param_builder

        for name, value in request.used:
            kind = PROTECTED_PARAMS.get(name)
            if kind is None or "bidx:" in value:
                continue
            new_value = ",".join(self.protector.search_value(kind, v) for v in value.split(","))
            if new_value == value:
                continue
            for i, clause in enumerate(request.clauses):
                if clause.name == name:
                    request.clauses[i] = Clause(name, _param_builder(request.types, name, new_value))
                    break

    def _secure_nested(self, request: SearchRequest, grants: Grants) -> None:
        """Chains and _has look at other resources: give their inner searches the same grants."""
        from changbai.store.search import Clause

        for i, clause in enumerate(request.clauses):
            if "." in clause.name.split("=")[0] or clause.name.startswith("_has:"):
                value = next((v for n, v in request.used if n == clause.name), None)
                if value is None:
                    continue
                request.clauses[i] = Clause(clause.name, nested_builder(request.types, clause.name, value, grants))

    # ------------------------------------------------------------------------------------- services
    def require_service(self, ctx: Context, service: str, what: str = "") -> None:
        """Routes beside the FHIR API (HL7 v2 over HTTP, uploads, the inbox) ask here; denials are audited."""
        p: Principal | None = ctx.principal
        if p is None or service in p.role.services:
            return
        row = au.event(
            "denied", "4", address=ctx.client_address or "", detail=f"{what or service}: not allowed", **_who(p)
        )
        self.trail.record([row])
        raise Forbidden(f"The role {p.role.name} may not use {service}")

    # ----------------------------------------------------------------------------------- break-glass
    def break_glass(self, p: Principal, patient: str, reason: str, address: str) -> int:
        if not p.role.break_glass:
            raise Forbidden(f"The role {p.role.name} may not break the glass")
        if not isinstance(reason, str) or len(reason.strip()) < 4 or len(reason) > 1000:
            raise InvalidInput("Break-the-glass needs a stated reason (4 to 1000 characters)")
        if not isinstance(patient, str) or not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", patient):
            raise InvalidInput("Break-the-glass needs the id of the Patient")
        now = now_ms()
        expires = now + BREAK_GLASS_MINUTES * 60 * 1000
        with self.db.write() as conn:
            conn.execute(
                insert(st.break_glass).values(
                    username=p.username,
                    patient=patient,
                    reason=reason.strip(),
                    started=now,
                    expires=expires,
                    reviewed=False,
                )
            )
            row = au.event(
                "break-glass",
                patients=[patient],
                detail=reason.strip(),
                purpose="BTG",
                flagged=True,
                address=address,
                **_who(p),
            )
            self.trail.append(conn, [row])
        self.generation += 1
        return expires

    # ------------------------------------------------------------------------------------ the router
    def guard(self, platform: Platform) -> None:
        """Plug into the router's hooks: checks before each interaction, history filtered after, and one
        audit row per top-level request (this object is the request observer)."""
        hooks = platform.router.hooks
        hooks.before.append(self._check_request)
        hooks.after.append(self._filter_response)
        hooks.observers.append(self)

    def _check_request(self, req: FhirRequest, ctx: Context) -> FhirResponse | None:
        p: Principal | None = ctx.principal
        return None if p is None else self._before(req, ctx, p)

    def _filter_response(self, req: FhirRequest, ctx: Context, resp: FhirResponse) -> None:
        p: Principal | None = ctx.principal
        if p is not None and _interaction(req) == "history" and resp.status == 200 and resp.body:
            self._filter_history(ctx, p, resp.body)

    def enter(self, req: FhirRequest, ctx: Context) -> dict[str, Any]:
        """A nested request (a batch entry) keeps its own read log; the outer one's is set aside."""
        return {k: ctx.extras.pop(k) for k in ("sec_read", "sec_denied", "sec_seen") if k in ctx.extras}

    def leave(self, req: FhirRequest, ctx: Context, resp: FhirResponse, token: dict[str, Any]) -> None:
        try:
            if ctx.principal is not None:
                self._audit_request(req, ctx, resp)
        finally:
            for key in ("sec_read", "sec_denied", "sec_seen"):
                ctx.extras.pop(key, None)
            ctx.extras.update(token)

    def _before(self, req: FhirRequest, ctx: Context, p: Principal) -> FhirResponse | None:
        from changbai.api.router import FhirResponse

        parts = [x for x in req.path.strip("/").split("/") if x]
        if parts[:2] == [".well-known", "smart-configuration"]:
            return FhirResponse(200, smart_configuration(ctx.base_url.rsplit("/fhir", 1)[0]))
        if p.role.name == "anonymous" and parts != ["metadata"]:
            raise self._deny(ctx, _unauthorized("Sign in first: this request needs a bearer token"))
        if ctx.purpose is not None and p.role.name != "anonymous":
            if p.purpose is not None and ctx.purpose != p.purpose:
                raise self._deny(ctx, Forbidden(f"This access token was issued for the purpose {p.purpose}"))
            try:
                pol.check_purpose(p.role, ctx.purpose)
            except ChangbaiError as exc:
                raise self._deny(ctx, exc) from None
        if not parts:
            return None
        if parts[0] == "AuditEvent":
            return self._audit_events(req, ctx, p, parts)
        if (parts[0] == "_history" or (len(parts) == 2 and parts[1] == "_history")) and "all" not in p.role.reach:
            raise self._deny(ctx, Forbidden("History across records is for platform operators"), req.path)
        if parts[0].startswith("$") and "all" not in p.role.reach:
            raise self._deny(ctx, Forbidden(f"The system operation {parts[0]} is for platform operators"), req.path)
        return None

    def _filter_history(self, ctx: Context, p: Principal, bundle: dict[str, Any]) -> None:
        entries = bundle.get("entry") or []
        kept = []
        with self.db.read() as conn:
            for entry in entries:
                res = entry.get("resource")
                rtype = (entry.get("fullUrl") or "").rsplit("/", 2)[-2] if entry.get("fullUrl") else ""
                if res is None:
                    if "all" in p.reach:
                        kept.append(entry)
                    continue
                if self._visible(conn, ctx, p, res.get("resourceType", rtype), res):
                    self.protector.reveal(res, p.role.identifiers == "full")
                    log_ = ctx.extras.setdefault("sec_read", {"entities": set(), "patients": set(), "flagged": False})
                    log_["entities"].add(f"{res.get('resourceType')}/{res.get('id')}")
                    log_["patients"] |= pol.read_labels(res).get(pol.SYS_PATIENT, set())
                    kept.append(entry)
        if len(kept) != len(entries):
            bundle.pop("total", None)
        if kept:
            bundle["entry"] = kept
        else:
            bundle.pop("entry", None)

    def _audit_request(self, req: FhirRequest, ctx: Context, resp: FhirResponse) -> None:
        p: Principal = ctx.principal
        rows = []
        query = "&".join(f"{k}={v}" for k, v in req.query)[:2000]
        common = dict(address=ctx.client_address or "", purpose=ctx.purpose or "", query=query, **_who(p))
        reads = ctx.extras.get("sec_read")
        kind = _interaction(req)
        if reads and (reads["entities"] or kind in ("search", "history")):
            rows.append(
                au.event(
                    kind,
                    patients=reads["patients"],
                    entities=sorted(reads["entities"])[:500],
                    flagged=reads["flagged"],
                    detail=f"{req.method} {req.path}"[:500],
                    **common,
                )
            )
        elif kind in ("search", "history") and resp.status == 200:
            rows.append(au.event(kind, detail=f"{req.method} {req.path}"[:500], **common))
        for entity, patient, message in ctx.extras.get("sec_denied", []):
            rows.append(
                au.event(
                    "denied",
                    "4",
                    patients=patient.split(),
                    entities=[entity] if entity else [],
                    detail=message,
                    **common,
                )
            )
        if resp.status >= 400 and not ctx.extras.get("sec_denied"):
            detail = ""
            if resp.body and resp.body.get("issue"):
                detail = str(resp.body["issue"][0].get("diagnostics", ""))
            rows.append(
                au.event(
                    "refused",
                    "4" if resp.status < 500 else "8",
                    detail=f"{resp.status} {req.method} {req.path[:200]}: {detail}"[:1000],
                    **common,
                )
            )
        try:
            self.trail.record(rows)
        except Exception:
            log.exception("audit write failed")
            raise

    # ------------------------------------------------------------------------------ AuditEvent API
    def _audit_events(self, req: FhirRequest, ctx: Context, p: Principal, parts: list[str]) -> FhirResponse:
        from urllib.parse import urlencode

        from changbai.api.router import FhirResponse
        from changbai.fhir.values import date_range

        if req.method.upper() not in ("GET", "HEAD"):
            raise MethodNotAllowed("The audit trail is append-only: AuditEvents cannot be written through the API")
        a = st.audit.c
        conds: list[Any] = []
        see = p.role.see_audit
        if see == "own" and p.patient:
            conds.append(_names(p.patient))
        elif see != "all":
            raise self._deny(ctx, Forbidden("Your role does not read the audit trail"), "AuditEvent")
        if len(parts) == 2:
            if not parts[1].isdigit():
                raise NotFound(f"AuditEvent/{parts[1]} is not known")
            conds.append(a.seq == int(parts[1]))
            rows, _ = self.trail.search(conds, 1, 0)
            if not rows:
                raise NotFound(f"AuditEvent/{parts[1]} is not known")
            return FhirResponse(200, au.to_audit_event(rows[0]))
        if len(parts) > 2:
            raise NotFound("No such AuditEvent interaction", code="not-supported")
        count, offset, counted = 20, 0, True
        for key, value in req.query:
            if len(value) > 200:
                raise InvalidInput(f"The value of '{key}' is too long", expression=key)
            base = key.split(":")[0]
            if base in ("patient", "entity"):
                conds.append(_names(value.split("/")[-1]))
            elif base in ("agent", "user", "who"):
                conds.append(a.username == value)
            elif base in ("facility", "site", "organization"):
                conds.append(a.organization == value.split("/")[-1])
            elif base == "outcome":
                conds.append(a.outcome == value)
            elif base in ("subtype", "type", "category"):
                conds.append(a.category == value.split("|")[-1])
            elif base == "date":
                prefix, rest = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
                low, high = date_range(rest)
                if prefix in ("ge", "gt"):
                    conds.append(a.recorded >= low)
                elif prefix in ("le", "lt"):
                    conds.append(a.recorded <= high)
                else:
                    conds.append(and_(a.recorded >= low, a.recorded <= high))
            elif base == "_count":
                if not value.isdigit():
                    raise InvalidInput("_count must be a non-negative integer", expression="_count")
                count = min(int(value), 1000)
            elif base == "_offset":
                if not value.isdigit():
                    raise InvalidInput("_offset must be a non-negative integer", expression="_offset")
                offset = int(value)
            elif base == "_total":
                if value not in ("none", "estimate", "accurate"):
                    raise InvalidInput(f"_total must be none, estimate or accurate, not '{value}'", expression=key)
                counted = value != "none"
            elif base in ("_format", "_pretty"):
                continue
            else:
                raise InvalidInput(f"Unknown AuditEvent search parameter '{key}'", expression=key, code="not-supported")
        rows, total = self.trail.search(conds, count + 1, offset, counted)
        more = len(rows) > count
        rows = rows[:count]
        base_url = ctx.base_url.rstrip("/")
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "self", "url": f"{base_url}/AuditEvent?{urlencode(req.query)}"}],
        }
        if total is not None:
            bundle["total"] = total
        if more:
            q = [(k, v) for k, v in req.query if k != "_offset"] + [("_offset", str(offset + count))]
            bundle["link"].append({"relation": "next", "url": f"{base_url}/AuditEvent?{urlencode(q)}"})
        if rows:
            bundle["entry"] = [
                {
                    "fullUrl": f"{base_url}/AuditEvent/{r['seq']}",
                    "resource": au.to_audit_event(r),
                    "search": {"mode": "match"},
                }
                for r in rows
            ]
        return FhirResponse(200, bundle)


# ------------------------------------------------------------------------------------------- helpers
def consent_permits(
    consent: dict[str, Any], actors: list[tuple[str, str]], now: int, purpose: str | None
) -> tuple[str, frozenset[str]] | None:
    """(patient, excluded sensitivity labels) when an active Consent authorises, now, one of ``actors``
    or, when it names no reader (a purpose-only authorisation), whoever acts with one of its purposes."""
    from changbai.fhir.values import date_range

    if consent.get("status") != "active":
        return None
    patient = pol.ref_id(consent.get("patient"), "Patient")
    provision = consent.get("provision")
    if not patient or not isinstance(provision, dict) or provision.get("type", "permit") != "permit":
        return None
    period = provision.get("period") or {}
    try:
        if period.get("start") and date_range(period["start"])[0] > now:
            return None
        if period.get("end") and date_range(period["end"])[1] < now:
            return None
    except (ChangbaiError, ValueError):
        return None
    named = set()
    for actor in provision.get("actor") or []:
        for kind in ("Practitioner", "Organization"):
            found = pol.ref_id((actor or {}).get("reference"), kind)
            if found:
                named.add((kind, found))
    purposes = {c.get("code") for c in provision.get("purpose") or [] if isinstance(c, dict)}
    if named and not named & set(actors):
        return None  # it names other readers
    if (purposes or not named) and purpose not in purposes:
        return None  # a purpose the reader does not act with (a purpose-only authorisation needs one)
    excluded: set[str] = set()
    for sub in provision.get("provision") or []:
        if isinstance(sub, dict) and sub.get("type") == "deny":
            excluded |= {c.get("code") for c in sub.get("securityLabel") or [] if isinstance(c, dict)}
    return patient, frozenset(x for x in excluded if isinstance(x, str))


def nested_builder(types: list[str], name: str, value: str, grants: Grants) -> Any:
    """A chain (``subject:Patient.name=x``) or ``_has`` condition whose inner resources are also limited
    to what the grants allow, so that neither can test hidden records."""
    from changbai.fhir.searchparams import registry
    from changbai.fhir.spec import spec
    from changbai.store.search import _param_builder, referenced, referring

    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) < 4 or not all(parts[1:]):
            raise InvalidInput("_has takes _has:Type:referenceParam:param=value", expression=name)
        _, other, ref_code, rest = parts
        if other not in spec().resource_types:
            raise InvalidInput(f"Unknown resource type '{other}' in _has", expression=name)
        ref = registry().get(other, ref_code)
        if ref is None or ref.type != "reference":
            raise InvalidInput(f"'{ref_code}' is not a reference parameter of {other}", expression=name)
        inner = (
            nested_builder([other], rest, value, grants)
            if rest.startswith("_has:") or "." in rest
            else _param_builder([other], rest, value)
        )

        def build_has() -> Any:
            others = (
                select(R.rid)
                .where(R.rtype == other, R.deleted == false(), inner(), pol.condition(grants, [other]))
                .correlate(None)
            )
            return R.rid.in_(referenced(types, other, ref_code, others))

        return build_has
    head, chain = name.split(".", 1)
    code, _, modifier = head.partition(":")
    params = [p for ty in types if (p := registry().get(ty, code)) is not None]
    if not params or params[0].type != "reference":
        return _param_builder(types, name, value)
    param = params[0]
    type_names = [p.resource_type for p in params]
    targets = [modifier] if modifier else list(param.targets)
    next_code = chain.split(".", 1)[0].split(":", 1)[0]
    targets = [ty for ty in targets if next_code in ("_id", "_lastUpdated") or registry().get(ty, next_code)]
    if not targets:
        raise InvalidInput(f"No target of '{code}' has a search parameter '{next_code}'", expression=name)
    inner = nested_builder(targets, chain, value, grants) if "." in chain else _param_builder(targets, chain, value)

    def build_chain() -> Any:
        found = (
            select(R.rid)
            .where(R.rtype.in_(targets), R.deleted == false(), inner(), pol.condition(grants, targets))
            .correlate(None)
        )
        return R.rid.in_(referring(type_names, param.code, found))

    return build_chain


def _who(p: Principal | None) -> dict[str, str]:
    if p is None:
        return {"username": "(platform)", "role": "", "organization": ""}
    return {"username": p.username, "role": p.role.name, "organization": p.organization or ""}


def _names(patient: str) -> Any:
    """Audit rows naming ``patient``, through their index (sec_audit_patient) rather than a scan of the trail."""
    ap = st.audit_patient.c
    return st.audit.c.seq.in_(select(ap.seq).where(ap.patient == patient))


def _interaction(req: FhirRequest) -> str:
    parts = [x for x in req.path.strip("/").split("/") if x]
    m = req.method.upper()
    if "_history" in parts:
        return "vread" if parts.index("_history") == len(parts) - 2 else "history"
    if any(x.startswith("$") for x in parts):
        return "operation"
    if m == "GET":
        return "read" if len(parts) == 2 else "search"
    if m == "POST" and parts and parts[-1] == "_search":
        return "search"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(m, "operation")


def _unauthorized(message: str) -> ChangbaiError:
    from changbai.errors import Unauthorized

    return Unauthorized(message)


def smart_configuration(root: str) -> dict[str, Any]:
    """/.well-known/smart-configuration (SMART App Launch 2.x)."""
    root = root.rstrip("/")
    return {
        "issuer": root,
        "jwks_uri": f"{root}/auth/jwks",
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token",
        "revocation_endpoint": f"{root}/auth/revoke",
        "introspection_endpoint": f"{root}/auth/introspect",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": [
            "openid",
            "fhirUser",
            "offline_access",
            "online_access",
            "launch/patient",
            "patient/*.rs",
            "patient/*.cruds",
            "user/*.rs",
            "user/*.cruds",
            "system/*.rs",
            "system/*.cruds",
        ],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-offline",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
            "sso-openid-connect",
        ],
    }


def purpose_of(header: str | None, principal: Principal | None) -> str | None:
    """The purpose of use a request acts with: the one it states (checked before the request runs), or
    the one its token was issued for."""
    if header is not None and header.strip():
        return header.strip()[:100]
    return principal.purpose if principal is not None else None


__all__ = ["Security", "consent_permits", "nested_builder", "or_", "smart_configuration"]
