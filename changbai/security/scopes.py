"""SMART App Launch v2 scopes (``patient/Observation.rs``, ``user/*.cruds``, ``system/*.rs``), with the v1
forms (``.read``, ``.write``, ``.*``) accepted and translated.

A scope grants interactions on a resource type in a context: ``patient`` (the resident in context),
``user`` (what the signed-in person may see) or ``system`` (a backend service). The interactions are the
letters c(reate) r(ead) u(pdate) d(elete) s(earch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from changbai.errors import InvalidInput
from changbai.fhir.spec import is_resource_type

V1 = {"read": "rs", "write": "cud", "*": "cruds"}
#: Scopes that are not about resources; accepted and passed through.
OTHER = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"})
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]{1,5})$")


@dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    rtype: str  # a resource type or *
    letters: frozenset[str]

    def covers(self, other: Scope) -> bool:
        return (
            self.context == other.context
            and (self.rtype == "*" or self.rtype == other.rtype)
            and other.letters <= self.letters
        )

    def __str__(self) -> str:
        return f"{self.context}/{self.rtype}.{''.join(c for c in 'cruds' if c in self.letters)}"


def parse_one(text: str) -> Scope | None:
    """One scope; None for the non-resource scopes; InvalidInput for anything malformed."""
    if text in OTHER or text.startswith("launch/"):
        return None
    m = _SCOPE.match(text)
    if m is None:
        raise InvalidInput(f"'{text[:80]}' is not a SMART scope", code="invalid")
    context, rtype, perms = m.groups()
    if rtype != "*" and not is_resource_type(rtype):
        raise InvalidInput(f"Unknown resource type '{rtype}' in scope '{text}'")
    letters = V1.get(perms, perms)
    if not letters or set(letters) - set("cruds") or len(set(letters)) != len(letters) or "*" in letters:
        raise InvalidInput(f"'{perms}' in scope '{text}' is not a combination of c r u d s (or read/write/*)")
    if perms not in V1 and letters != "".join(c for c in "cruds" if c in letters):
        raise InvalidInput(f"The letters of scope '{text}' must be in the order c r u d s")
    return Scope(context, rtype, frozenset(letters))


def parse(text: str) -> tuple[list[Scope], list[str]]:
    """A space-separated scope string: (resource scopes, other scopes)."""
    if len(text) > 4000:
        raise InvalidInput("The scope parameter is too long")
    resources, others = [], []
    for part in text.split():
        scope = parse_one(part)
        if scope is None:
            others.append(part)
        else:
            resources.append(scope)
    return resources, others


def allows(scopes: list[Scope], rtype: str, letter: str) -> bool:
    return any((s.rtype == "*" or s.rtype == rtype) and letter in s.letters for s in scopes)


def within(requested: list[Scope], allowed: list[Scope]) -> list[Scope]:
    """The requested scopes that the allowed ones do not cover (empty: no escalation)."""
    return [r for r in requested if not any(a.covers(r) for a in allowed)]
