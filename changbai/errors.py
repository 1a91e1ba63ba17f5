"""One exception family for the whole platform; each maps to a FHIR OperationOutcome.

Code anywhere raises a subclass of :class:`ChangbaiError`; the HTTP layer, the MLLP listener and the CLI
turn it into an OperationOutcome (or an HL7 ACK, or a message on stderr). Nothing else should reach a user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Issue:
    """One OperationOutcome.issue: severity, code (IssueType), what, and where (FHIRPath expressions)."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: list[str] = field(default_factory=list)

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


class ChangbaiError(Exception):
    """Base of every error a user may see. ``status`` is the HTTP status it maps to."""

    status = 400
    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        expression: str | list[str] | None = None,
        issues: list[Issue] | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if issues is None:
            expr = [expression] if isinstance(expression, str) else list(expression or [])
            issues = [Issue(message, self.code, "error", expr)]
        self.issues = issues

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class InvalidInput(ChangbaiError):
    """The input is malformed or not valid FHIR (400)."""


class InvalidResource(ChangbaiError):
    """A resource failed validation (400, or 422 for business rules)."""

    code = "structure"


class NotFound(ChangbaiError):
    status = 404
    code = "not-found"


class Gone(ChangbaiError):
    """The resource existed and was deleted (410)."""

    status = 410
    code = "deleted"


class Conflict(ChangbaiError):
    status = 409
    code = "conflict"


class PreconditionFailed(ChangbaiError):
    """If-Match / conditional operation precondition failed (412)."""

    status = 412
    code = "conflict"


class Unprocessable(ChangbaiError):
    status = 422
    code = "processing"


class NotSupported(ChangbaiError):
    status = 400
    code = "not-supported"


class MethodNotAllowed(ChangbaiError):
    status = 405
    code = "not-supported"


class UnsupportedMediaType(ChangbaiError):
    status = 415
    code = "not-supported"


class NotAcceptable(ChangbaiError):
    status = 406
    code = "not-supported"


class TooLarge(ChangbaiError):
    status = 413
    code = "too-costly"


class Unauthorized(ChangbaiError):
    """No or bad credentials (401)."""

    status = 401
    code = "login"


class Forbidden(ChangbaiError):
    status = 403
    code = "forbidden"


class TooManyRequests(ChangbaiError):
    status = 429
    code = "throttled"
