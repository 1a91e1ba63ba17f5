"""What goes up a link: a policy file (JSON) names the resource types sent and the de-identification
rules applied to them, so that the operators of a link change it without touching code.

A policy::

    {"name": "...", "description": "...",
     "include": ["*"] | ["Patient", "Encounter", ...],   # resource types sent ("*" = all)
     "exclude": ["Subscription"],                         # never sent
     "deidentify": [{"path": "Patient.name", "action": "remove"}, ...]}

Paths are dotted element paths from the resource type (``*`` for any type) through arrays; actions are
``remove``, ``hash`` (SHA-256, so the same value links across records without being readable),
``year`` (a date or dateTime cut to its year) and ``mask`` (keep the first ``keep`` characters).
Shipped policies live in ``policies/``; CHANGBAI_FEDERATION_POLICY names one, or a path to a file.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from changbai.errors import InvalidInput

POLICY_DIR = Path(__file__).parent / "policies"
ACTIONS = ("remove", "hash", "year", "mask")


@dataclass(frozen=True)
class Rule:
    rtype: str  # "*" for any
    steps: tuple[str, ...]
    action: str
    keep: int = 0


@dataclass
class Policy:
    name: str
    include: frozenset[str]
    exclude: frozenset[str]
    rules: list[Rule] = field(default_factory=list)
    description: str = ""

    def sends(self, rtype: str) -> bool:
        return rtype not in self.exclude and ("*" in self.include or rtype in self.include)

    def apply(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource as it may leave the node (a copy when a rule changes it)."""
        rtype = resource.get("resourceType", "")
        rules = [r for r in self.rules if r.rtype in ("*", rtype)]
        if not rules:
            return resource
        out = copy.deepcopy(resource)
        for rule in rules:
            _apply(out, rule.steps, rule)
        return out


def _apply(node: Any, steps: tuple[str, ...], rule: Rule) -> None:
    if isinstance(node, list):
        for item in node:
            _apply(item, steps, rule)
        return
    if not isinstance(node, dict) or not steps:
        return
    key, rest = steps[0], steps[1:]
    if key not in node:
        return
    if rest:
        _apply(node[key], rest, rule)
        return
    if rule.action == "remove":
        del node[key]
    else:
        node[key] = _transform(node[key], rule)


def _transform(value: Any, rule: Rule) -> Any:
    if isinstance(value, list):
        return [_transform(v, rule) for v in value]
    if not isinstance(value, str):
        return value
    if rule.action == "hash":
        return hashlib.sha256(value.encode()).hexdigest()
    if rule.action == "year":
        return value[:4]
    return value[: rule.keep] + "*" * max(0, len(value) - rule.keep)  # mask


def parse_policy(data: Any, where: str = "policy") -> Policy:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InvalidInput(f"{where}: a policy is a JSON object with a 'name'")
    rules = []
    for i, r in enumerate(data.get("deidentify", [])):
        path, action = r.get("path", ""), r.get("action", "")
        parts = tuple(path.split("."))
        if len(parts) < 2 or action not in ACTIONS:
            raise InvalidInput(f"{where}: rule {i} needs a path 'Type.element' and an action in {ACTIONS}")
        rules.append(Rule(parts[0], parts[1:], action, int(r.get("keep", 0))))
    return Policy(
        data["name"],
        frozenset(data.get("include", ["*"])),
        frozenset(data.get("exclude", [])),
        rules,
        data.get("description", ""),
    )


def load_policy(name_or_path: str) -> Policy:
    """A shipped policy by name (``whole-record``, ``national-basic``) or a policy file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = POLICY_DIR / f"{name_or_path}.json"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in POLICY_DIR.glob("*.json")))
        raise InvalidInput(f"Federation policy '{name_or_path}' not found (shipped: {shipped})")
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Federation policy {path}: not valid JSON ({exc})") from None
    return parse_policy(data, str(path))
