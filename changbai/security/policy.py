"""Who may see and change which records: roles (data/roles.json), access labels on every record, and the
grants of one principal, turned into one SQL condition (searches, counts) and one Python check (reads).

Every record written gets access labels in ``meta.security`` (computed here, never taken from the writer):

- ``access-class``: ``personal`` (in the Patient compartment) or ``public`` (directories, terminology);
- ``access-patient``: the resident the record is about;
- ``access-facility``: the facility that holds it: the writer's facility, else the first Organization
  named by ``meta.source`` or one of the holder elements of data/labels.json;
- ``access-region``: GB/T 2260 county, city and province codes of that facility (its address division
  extension);
- ``access-home`` (Patient only): the same codes of the resident's home address. Other records do not copy
  them: a regional grant reaches a resident's records through their Patient, so scope follows the
  resident's address, and a move relabels one record (the Patient), in the transaction that writes it;
- ``access-care`` (Patient only): the contracted family doctor (``generalPractitioner``);
- v3-ActCode sensitivity (PSY, HIV, ETH, SDV, STD) from the codes of the record (data/labels.json).

The labels are indexed by the store like any ``_security`` token, so a principal's reach is a condition
on the store's own index tables; the SQL and the Python check are built from the same grants.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true

from changbai.errors import Forbidden, InvalidInput
from changbai.security import scopes as sc
from changbai.security import tables as st
from changbai.store import schema as t

DATA = Path(__file__).parent / "data"
BASE = "https://changbai.example/fhir/CodeSystem"
SYS_CLASS = f"{BASE}/access-class"
SYS_PATIENT = f"{BASE}/access-patient"
SYS_FACILITY = f"{BASE}/access-facility"
SYS_REGION = f"{BASE}/access-region"
SYS_HOME = f"{BASE}/access-home"
SYS_CARE = f"{BASE}/access-care"
SYS_ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACCESS_SYSTEMS = frozenset({SYS_CLASS, SYS_PATIENT, SYS_FACILITY, SYS_REGION, SYS_HOME, SYS_CARE})
SENSITIVE_CODES = frozenset({"PSY", "HIV", "ETH", "SDV", "STD", "SEX", "GDIS"})
REACHES = frozenset({"own", "facility", "treated", "care", "consent", "break_glass", "region", "all"})
WRITES = frozenset({"none", "own-consent", "facility", "all"})
PURPOSE = re.compile(r"^[A-Za-z0-9\-]{1,40}$")  # a v3 PurposeOfUse code (v3-ActReason)
_REF = re.compile(r"(?:^|/)(Patient|Organization|Practitioner)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


# ------------------------------------------------------------------------------------------------ roles
@dataclass(frozen=True)
class Role:
    name: str
    display: dict[str, str]
    scopes: tuple[sc.Scope, ...]
    reach: frozenset[str]
    identifiers: str  # full | masked
    write: str
    break_glass: bool
    see_audit: str  # none | own | region | all
    services: frozenset[str] = frozenset()  # platform services beyond FHIR (roles.json "services")
    purposes: frozenset[str] = frozenset()  # v3 PurposeOfUse codes members may act with ("purposes")


@dataclass(frozen=True)
class Policy:
    version: str
    roles: dict[str, Role]

    def role(self, name: str) -> Role:
        role = self.roles.get(name)
        if role is None:
            raise InvalidInput(f"Unknown role '{name}'; roles are: {', '.join(sorted(self.roles))}")
        return role


def load_policy(path: Path | None = None) -> Policy:
    """Read and check a roles file; every mistake is named (an operator edits this file)."""
    raw = json.loads((path or DATA / "roles.json").read_text(encoding="utf-8"))
    roles = {}
    for name, r in raw["roles"].items():
        reach = frozenset(r["reach"])
        if reach - REACHES:
            raise InvalidInput(f"Role {name}: unknown reach {sorted(reach - REACHES)}")
        if r["write"] not in WRITES:
            raise InvalidInput(f"Role {name}: write must be one of {sorted(WRITES)}")
        if r["identifiers"] not in ("full", "masked"):
            raise InvalidInput(f"Role {name}: identifiers must be full or masked")
        purposes = frozenset(r.get("purposes", ()))
        if any(not isinstance(p, str) or not PURPOSE.match(p) for p in purposes):
            raise InvalidInput(f"Role {name}: purposes are v3 PurposeOfUse codes (letters, digits, '-')")
        parsed = tuple(s for s in (sc.parse_one(x) for x in r["scopes"]) if s is not None)
        roles[name] = Role(
            name,
            r.get("display", {}),
            parsed,
            reach,
            r["identifiers"],
            r["write"],
            bool(r.get("break_glass")),
            r.get("see_audit", "none"),
            frozenset(r.get("services", ())),
            purposes,
        )
    return Policy(str(raw.get("version", "")), roles)


@lru_cache(maxsize=1)
def label_rules() -> dict[str, Any]:
    return json.loads((DATA / "labels.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def personal_types() -> frozenset[str]:
    from changbai.fhir.searchparams import compartments

    return frozenset({ty for ty, params in compartments()["Patient"].items() if params} | {"Patient"})


# --------------------------------------------------------------------------------------------- principal
@dataclass
class Principal:
    """Who acts: from a verified access token (or minted by the platform for its own commands)."""

    username: str
    role: Role
    scopes: list[sc.Scope]
    kind: str = "user"  # user | client
    organization: str | None = None
    practitioner: str | None = None
    patient: str | None = None
    region: str | None = None
    client_id: str = ""
    jti: str = ""
    purpose: str | None = None  # the purpose of use the token was issued for (its launch context)
    _allowed: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False, compare=False)

    def may(self, rtype: str, letter: str) -> bool:
        """Do the scopes allow ``letter`` (c r u d s) on ``rtype``? Asked for every record a request
        returns, so each answer is kept (scopes do not change during a token's life)."""
        key = (rtype, letter)
        allowed = self._allowed.get(key)
        if allowed is None:
            allowed = self._allowed[key] = sc.allows(self.scopes, rtype, letter)
        return allowed

    @property
    def reach(self) -> frozenset[str]:
        return self.role.reach


# ------------------------------------------------------------------------------------------------ labels
def ref_id(value: Any, rtype: str) -> str | None:
    """The id of a reference to ``rtype`` in a Reference, a list of them, or {actor: Reference}."""
    if isinstance(value, list):
        for item in value:
            found = ref_id(item, rtype)
            if found:
                return found
        return None
    if not isinstance(value, dict):
        return None
    if "actor" in value and "reference" not in value:
        return ref_id(value["actor"], rtype)
    reference = value.get("reference")
    if isinstance(reference, str):
        m = _REF.search(reference)
        if m and m.group(1) == rtype:
            return m.group(2)
    return None


def division_of(resource: dict[str, Any]) -> str | None:
    """The 6-digit GB/T 2260 county code of a resource's address (the division extension), home first."""
    addresses = resource.get("address")
    if isinstance(addresses, dict):
        addresses = [addresses]
    if not isinstance(addresses, list):
        return None
    ordered = sorted((a for a in addresses if isinstance(a, dict)), key=lambda a: a.get("use") != "home")
    for address in ordered:
        for ext in address.get("extension") or []:
            coding = ext.get("valueCoding") if isinstance(ext, dict) else None
            code = coding.get("code") if isinstance(coding, dict) else None
            if isinstance(code, str) and code[:6].isdigit() and len(code) >= 6:
                return code[:6]
    return None


def region_codes(county: str | None) -> list[str]:
    """County 220102 -> [220102, 220100, 220000]: an officer's area code matches one of them."""
    if not county or len(county) != 6:
        return []
    return sorted({county, county[:4] + "00", county[:2] + "0000"})


def holder_of(resource: dict[str, Any], rtype: str) -> str | None:
    if rtype == "Organization":
        return resource.get("id")
    source = (resource.get("meta") or {}).get("source")
    if isinstance(source, str):
        m = _REF.search(source)
        if m and m.group(1) == "Organization":
            return m.group(2)
    for path in label_rules()["holders"]:
        found = ref_id(resource.get(path), "Organization")
        if found:
            return found
    return None


def patient_of(resource: dict[str, Any], rtype: str) -> str | None:
    if rtype == "Patient":
        return resource.get("id")
    for path in label_rules()["patient_paths"]:
        found = ref_id(resource.get(path), "Patient")
        if found:
            return found
    return None


def sensitivity(resource: dict[str, Any]) -> set[str]:
    rules = label_rules()["sensitive"]
    found: set[str] = set()
    concepts = []
    for key in ("code", "reasonCode", "valueCodeableConcept"):
        value = resource.get(key)
        concepts.extend(value if isinstance(value, list) else [value])
    for concept in concepts:
        if not isinstance(concept, dict):
            continue
        for coding in concept.get("coding") or []:
            table = rules.get(coding.get("system")) if isinstance(coding, dict) else None
            code = coding.get("code") if table else None
            if not isinstance(code, str):
                continue
            best = max((p for p in table if code.startswith(p)), key=len, default=None)
            if best:
                found.add(table[best])
    return found


@dataclass
class Labels:
    personal: bool
    patient: str | None
    facility: str | None
    regions: list[str]  # of the facility
    care: list[str]
    sensitive: set[str]
    home: list[str] = field(default_factory=list)  # of the resident's address (Patient only)

    def codings(self) -> list[dict[str, str]]:
        out = [{"system": SYS_CLASS, "code": "personal" if self.personal else "public"}]
        if self.patient:
            out.append({"system": SYS_PATIENT, "code": self.patient})
        if self.facility:
            out.append({"system": SYS_FACILITY, "code": self.facility})
        out.extend({"system": SYS_REGION, "code": r} for r in self.regions)
        out.extend({"system": SYS_HOME, "code": r} for r in self.home)
        out.extend({"system": SYS_CARE, "code": c} for c in self.care)
        out.extend({"system": SYS_ACTCODE, "code": s} for s in sorted(self.sensitive))
        return out


def read_labels(resource: dict[str, Any]) -> dict[str, set[str]]:
    """The access labels a stored record carries, by system."""
    out: dict[str, set[str]] = {}
    for coding in (resource.get("meta") or {}).get("security") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            out.setdefault(coding.get("system") or "", set()).add(coding["code"])
    return out


def apply_labels(resource: dict[str, Any], labels: Labels) -> None:
    """Replace the access labels of ``resource`` (whatever the writer put there) with ``labels``."""
    meta = dict(resource.get("meta") or {})
    kept = [
        c
        for c in meta.get("security") or []
        if isinstance(c, dict)
        and c.get("system") not in ACCESS_SYSTEMS
        and not (c.get("system") == SYS_ACTCODE and c.get("code") in SENSITIVE_CODES)
    ]
    writer_sensitive = {
        c["code"]
        for c in meta.get("security") or []
        if isinstance(c, dict) and c.get("system") == SYS_ACTCODE and c.get("code") in SENSITIVE_CODES
    }
    labels.sensitive |= writer_sensitive
    meta["security"] = kept + labels.codings()
    resource["meta"] = meta


# ------------------------------------------------------------------------------------------------ grants
@dataclass
class Grants:
    """What one principal may read, in the terms of the labels."""

    all: bool = False
    facilities: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)
    patients: dict[str, frozenset[str]] = field(default_factory=dict)  # patient -> excluded sensitivities
    treated_by: str | None = None  # facility whose treated residents are visible
    care: list[str] = field(default_factory=list)  # Practitioner/x, Organization/y
    break_glass: set[str] = field(default_factory=set)
    #: SQL conditions already built from these grants, by resource types (grants are reused for a while)
    sql: dict[tuple[str, tuple[str, ...] | None], Any] = field(default_factory=dict, repr=False, compare=False)

    def add_patient(self, pid: str, excluded: frozenset[str]) -> None:
        if pid in self.patients:
            self.patients[pid] = self.patients[pid] & excluded
        else:
            self.patients[pid] = excluded


def condition(grants: Grants, types: list[str] | None) -> ColumnElement[bool]:
    """The SQL condition on ``resource`` rows that a principal's grants allow (None types: any)."""
    key = ("condition", tuple(types) if types is not None else None)
    cached = grants.sql.get(key)
    if cached is None:
        cached = grants.sql[key] = label_filter(grants, types)(t.resource.c.rid)  # the prebuilt one
    return cached


def label_filter(grants: Grants, types: list[str] | None) -> Callable[[Any], ColumnElement[bool]]:
    """:func:`build_label_filter`, built once per grants and types (grants are reused for a while)."""
    key = ("filter", tuple(types) if types is not None else None)
    cached = grants.sql.get(key)
    if cached is None:
        cached = grants.sql[key] = build_label_filter(grants, types)
    return cached


def build_label_filter(grants: Grants, types: list[str] | None) -> Callable[[Any], ColumnElement[bool]]:
    """The grants as a condition on one record's rid: does it carry a label they allow?

    One correlated ``EXISTS`` over the record's own ``_security`` index rows (the index on ``rid``), with
    the facility, region, resident, treated and care conditions ORed inside it. A search's candidates are
    probed one by one, so the cost follows the candidates, never the size of what a facility holds (the
    OR of ``rid IN (all rows with label x)`` sets it replaces made every search enumerate, and materialise,
    everything the reader may see). ``types`` limits the rows to records of those types.
    """
    if grants.all:
        return lambda rid: true()
    s = t.idx_token.alias("sec_label")
    terms: list[ColumnElement[bool]] = [and_(s.c.system == SYS_CLASS, s.c.code == "public")]
    if grants.facilities:
        terms.append(and_(s.c.system == SYS_FACILITY, _in(s.c.code, grants.facilities)))
    if grants.regions:
        terms.append(and_(s.c.system == SYS_REGION, _in(s.c.code, grants.regions)))
        # or the resident lives there: their Patient carries the home codes
        pp = t.idx_token.alias("sec_patient")
        h = t.idx_token.alias("sec_home")
        home = (
            select(h.c.rid)
            .select_from(pp.join(h, h.c.rid == pp.c.rid))
            .where(
                pp.c.rtype == "Patient",
                pp.c.param == "_security",
                pp.c.system == SYS_PATIENT,
                pp.c.code == s.c.code,
                h.c.rtype == "Patient",
                h.c.param == "_security",
                h.c.system == SYS_HOME,
                _in(h.c.code, grants.regions),
            )
            .correlate(s)
        )
        terms.append(and_(s.c.system == SYS_PATIENT, exists(home)))
    plain = {p for p, ex in grants.patients.items() if not ex} | grants.break_glass
    if plain:
        terms.append(and_(s.c.system == SYS_PATIENT, _in(s.c.code, plain)))
    for pid, excluded in sorted(grants.patients.items()):
        if excluded and pid not in grants.break_glass:
            x = t.idx_token.alias("sec_excluded")
            hidden = (
                select(x.c.rid)
                .where(x.c.rid == s.c.rid, x.c.param == "_security", x.c.system == SYS_ACTCODE, _in(x.c.code, excluded))
                .correlate(s)
            )
            terms.append(and_(s.c.system == SYS_PATIENT, s.c.code == pid, ~exists(hidden)))
    if grants.treated_by:
        tr = st.treatment.c
        treated = select(tr.patient).where(tr.organization == grants.treated_by, tr.patient == s.c.code).correlate(s)
        terms.append(and_(s.c.system == SYS_PATIENT, exists(treated)))
    if grants.care:
        c = t.idx_token.c
        cared = (
            select(c.code)
            .where(
                c.rtype == "Patient",
                c.param == "_security",
                c.system == SYS_PATIENT,
                c.rid.in_(
                    select(c.rid)
                    .where(c.rtype == "Patient", c.param == "_security", c.system == SYS_CARE, _in(c.code, grants.care))
                    .correlate(None)
                ),
            )
            .correlate(None)
        )
        terms.append(and_(s.c.system == SYS_PATIENT, s.c.code.in_(cared)))
    wanted = [s.c.param == "_security", or_(*terms)]
    if types is not None:
        wanted.append(_in(s.c.rtype, types) if types else false())

    on_resource = exists(select(s.c.rid).where(s.c.rid == t.resource.c.rid, *wanted))

    def build(rid: Any) -> ColumnElement[bool]:
        if rid is t.resource.c.rid:
            return on_resource  # built once: most searches apply it to ``resource`` rows
        return exists(select(s.c.rid).where(s.c.rid == rid, *wanted))

    return build


def _in(column: Any, values: Any) -> ColumnElement[bool]:
    values = sorted(values)
    return column == values[0] if len(values) == 1 else column.in_(values)


def quick_check(grants: Grants, labels: dict[str, set[str]]) -> bool | None:
    """Decide from a record's labels alone; None when only the database can tell (treated, cared for,
    or living in the area)."""
    if grants.all:
        return True
    if "public" in labels.get(SYS_CLASS, ()):
        return True
    if labels.get(SYS_FACILITY, set()) & grants.facilities:
        return True
    if (labels.get(SYS_REGION, set()) | labels.get(SYS_HOME, set())) & grants.regions:
        return True
    sensitive = labels.get(SYS_ACTCODE, set())
    for pid in labels.get(SYS_PATIENT, ()):
        if pid in grants.break_glass:
            return True
        if pid in grants.patients and not (grants.patients[pid] & sensitive):
            return True
    if (grants.treated_by or grants.care or grants.regions) and labels.get(SYS_PATIENT):
        return None  # treated, cared for or living in the area: the database knows
    return False


def check_purpose(role: Role, purpose: str | None) -> None:
    """Refuse a purpose of use that is not a code, or that the role may not act with (roles.json)."""
    if purpose is None:
        return
    if not PURPOSE.match(purpose):
        raise InvalidInput(
            "The purpose of use must be a v3 PurposeOfUse code (e.g. TREAT, HRESCH, HPAYMT)",
            expression="X-Purpose-Of-Use",
        )
    if purpose not in role.purposes:
        allowed = ", ".join(sorted(role.purposes)) or "none"
        raise Forbidden(f"The role {role.name} may not act with the purpose {purpose} (its purposes: {allowed})")


def now_ms() -> int:
    return int(time.time() * 1000)
