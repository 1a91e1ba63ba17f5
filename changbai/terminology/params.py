"""FHIR Parameters in and out: read operation inputs, build outputs, and the issue format of tx servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from changbai.errors import InvalidInput

Resource = dict[str, Any]

TX_ISSUE_TYPE = "http://hl7.org/fhir/tools/CodeSystem/tx-issue-type"
MESSAGE_ID = "http://hl7.org/fhir/StructureDefinition/operationoutcome-message-id"


class Inputs:
    """An operation's input parameters by name (a Parameters resource or a plain mapping)."""

    def __init__(self, parameters: Resource | dict[str, Any] | None) -> None:
        self.values: dict[str, list[Any]] = {}
        if not parameters:
            return
        if parameters.get("resourceType") == "Parameters":
            for p in parameters.get("parameter", []):
                name = p.get("name")
                if not name:
                    raise InvalidInput("A parameter has no name", expression="Parameters.parameter.name")
                self.values.setdefault(name, []).append(_value(p))
        else:
            for name, value in parameters.items():
                self.values[name] = list(value) if isinstance(value, list) else [value]

    def get(self, name: str, default: Any = None) -> Any:
        found = self.values.get(name)
        return found[0] if found else default

    def all(self, name: str) -> list[Any]:
        return self.values.get(name, [])

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, str):
            return value.lower() == "true"
        return bool(value)

    def int(self, name: str) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"Parameter '{name}' must be an integer", expression=name) from exc

    def __contains__(self, name: str) -> bool:
        return name in self.values


def _value(p: dict[str, Any]) -> Any:
    if "resource" in p:
        return p["resource"]
    if "part" in p:
        return {q["name"]: _value(q) for q in p["part"]}
    for k, v in p.items():
        if k.startswith("value"):
            return v
    return None


def typed(name: str, value: Any, kind: str) -> dict[str, Any]:
    return {"name": name, f"value{kind}": value}


@dataclass
class TxIssue:
    """One issue as terminology servers report it (OperationOutcome.issue with a tx-issue-type code)."""

    severity: str
    code: str
    tx_code: str
    text: str
    path: str | None = None
    message_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {}
        issue["severity"] = self.severity
        issue["code"] = self.code
        issue["details"] = {"text": self.text}
        if self.tx_code:
            issue["details"] = {"coding": [{"system": TX_ISSUE_TYPE, "code": self.tx_code}], "text": self.text}
        if self.path:
            issue["location"] = [self.path]
            issue["expression"] = [self.path]
        issue.update(self.extra)  # e.g. diagnostics
        return issue


def outcome(issues: list[TxIssue]) -> Resource:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


class TxError(InvalidInput):
    """An operation failure carrying tx-style issues (so the OperationOutcome names the tx issue type)."""

    def __init__(self, issue: TxIssue, status: int = 400, more: list[TxIssue] | None = None) -> None:
        super().__init__(issue.text, status=status, code=issue.code)
        self.tx_issues = [issue, *(more or [])]

    def outcome(self) -> dict[str, Any]:
        return outcome(self.tx_issues)


def not_found(text: str, message_id: str = "Unable_to_resolve_value_Set_", status: int = 404) -> TxError:
    return TxError(TxIssue("error", "not-found", "not-found", text, message_id=message_id), status=status)
