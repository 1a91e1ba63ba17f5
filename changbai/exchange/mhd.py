"""IHE MHD ITI-65 (Provide Document Bundle): the shape check before the platform's transaction writes it.

ITI-65 is a transaction Bundle with one SubmissionSet (a List coded ``submissionset``), the
DocumentReferences it lists, and usually the documents themselves as Binary entries that the
DocumentReferences' attachments point to. The write is an ordinary transaction; this module only says
whether the bundle has that shape, as OperationOutcome issues (empty list = conforms).
"""

from __future__ import annotations

from typing import Any

from changbai.errors import Issue

SUBMISSIONSET_CODES = {"submissionset"}
LIST_TYPE_SYSTEM = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"


def _is_submission_set(resource: dict[str, Any]) -> bool:
    if resource.get("resourceType") != "List":
        return False
    codings = (resource.get("code") or {}).get("coding") or []
    return any(c.get("code") in SUBMISSIONSET_CODES for c in codings)


def validate_provide_bundle(bundle: Any) -> list[Issue]:
    """Issues that keep ``bundle`` from being an ITI-65 Provide Document Bundle."""
    issues: list[Issue] = []

    def err(text: str, where: str) -> None:
        issues.append(Issue(text, "invalid", "error", [where]))

    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        err("ITI-65 takes a Bundle", "Bundle")
        return issues
    if bundle.get("type") != "transaction":
        err("the Bundle must be of type transaction", "Bundle.type")
    entries = bundle.get("entry") or []
    by_url: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            err("every entry needs a resource", where)
            continue
        if not entry.get("fullUrl"):
            err("every entry needs a fullUrl (references between entries use it)", f"{where}.fullUrl")
        else:
            by_url[entry["fullUrl"]] = entry["resource"]
        method = (entry.get("request") or {}).get("method")
        if method not in ("POST", "PUT"):
            err("ITI-65 entries are created or updated (request.method POST or PUT)", f"{where}.request.method")
    resources = [e.get("resource") or {} for e in entries if isinstance(e, dict)]
    sets = [r for r in resources if _is_submission_set(r)]
    if len(sets) != 1:
        err(f"exactly one SubmissionSet (List with code submissionset) is required, found {len(sets)}", "Bundle.entry")
    docs = {url: r for url, r in by_url.items() if r.get("resourceType") == "DocumentReference"}
    if not docs:
        err("at least one DocumentReference is required", "Bundle.entry")
    if sets:
        listed = {(item.get("item") or {}).get("reference") for item in sets[0].get("entry") or []}
        for url in docs:
            if url not in listed:
                err(f"DocumentReference {url} is not in the SubmissionSet", "List.entry")
        for ref in listed - set(docs):
            err(f"the SubmissionSet lists {ref}, which is not a DocumentReference of this bundle", "List.entry")
        if not sets[0].get("subject"):
            err("the SubmissionSet needs a subject (the patient)", "List.subject")
    for url, doc in docs.items():
        if doc.get("status") != "current":
            err(f"DocumentReference {url}: status must be current", "DocumentReference.status")
        if not doc.get("subject"):
            err(f"DocumentReference {url}: subject (the patient) is required", "DocumentReference.subject")
        contents = doc.get("content") or []
        if not contents:
            err(f"DocumentReference {url}: content is required", "DocumentReference.content")
        for content in contents:
            attachment = content.get("attachment") or {}
            if not attachment.get("contentType"):
                err(
                    f"DocumentReference {url}: attachment.contentType is required",
                    "DocumentReference.content.attachment.contentType",
                )
            target = attachment.get("url")
            if not target and not attachment.get("data"):
                err(
                    f"DocumentReference {url}: attachment needs a url (to a Binary) or data",
                    "DocumentReference.content.attachment.url",
                )
            elif target and target.startswith("urn:") and (by_url.get(target) or {}).get("resourceType") != "Binary":
                err(
                    f"DocumentReference {url}: attachment.url {target} is not a Binary of this bundle",
                    "DocumentReference.content.attachment.url",
                )
    return issues


def submission_set(patient_ref: str, document_refs: list[str], source: str, when: str) -> dict[str, Any]:
    """A SubmissionSet List for a set of documents (what a CDA upload sends along in MHD form)."""
    return {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": LIST_TYPE_SYSTEM, "code": "submissionset"}]},
        "subject": {"reference": patient_ref},
        "source": {"display": source},
        "date": when,
        "entry": [{"item": {"reference": ref}} for ref in document_refs],
    }
