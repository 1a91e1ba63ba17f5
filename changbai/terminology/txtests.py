"""Runner for the HL7 terminology ecosystem test suite (tx-ecosystem tests/test-cases.json).

Each suite's setup resources are loaded into an :class:`InMemorySource`; each test's request is sent to
the matching operation handler (in process, or through any callable with the same shape, e.g. an HTTP
client); the answer is compared with the expected response by the suite's own rules: expected files are
templates ($id$, $uuid$, $instant$, $choice:..$, $fragments:..$, $external:..$ ...), objects may list
``$optional-properties$`` and ``$count-arrays$``, array entries may be ``$optional$`` (true, a mode, a
negated mode, ``version:N`` or ``warning:..``), and array order never matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changbai.errors import ChangbaiError
from changbai.terminology import operations
from changbai.terminology.source import InMemorySource, LayeredSource

Resource = dict[str, Any]
#: The FHIR version the platform speaks (for $version$ and version:N filters).
SERVER_VERSION = "4.0.1"
#: general: every test for all servers. (Not flat: the engine nests an expansion by the code system's
#: hierarchy unless excludeNested is true, so the recordings of nested expansions apply.)
MODES = frozenset({"general"})

#: (operation, source, parameters, accept_language, header) -> response resource (raises ChangbaiError).
Handler = Callable[[str, InMemorySource, Resource, str | None, dict[str, str]], Resource]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8-sig"))


# comparison --------------------------------------------------------------------------------------------


_PATTERNS = {
    "$instant$": re.compile(
        r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)"
        r"(\.[0-9]{1,9})?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
    ),
    "$uuid$": re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "$id$": re.compile(r"[A-Za-z0-9\-.]{1,64}"),
    "$url$": re.compile(r"(https?|urn):\S+"),
    "$token$": re.compile(r"\S+( \S+)*"),
    "$date$": re.compile(r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?(T\S+)?"),
    "$semver$": re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"),
}


@dataclass
class Comparer:
    """The comparison rules of the HL7 runner (org.hl7.fhir.r5.test.utils.CompareUtilities), except that array
    order never matters (the suite's readme; the runner gets there by sorting both sides first)."""

    modes: frozenset[str] = MODES
    version: str = SERVER_VERSION
    externals: dict[str, str] | None = None
    #: pattern mode (the runner's metadata and term-caps tests): only what the template names is checked
    pattern: bool = False

    def string_matches(self, expected: str, actual: str) -> bool:
        if not (expected.startswith("$") and expected.endswith("$") and len(expected) > 1):
            if "$version$" in expected:
                expected = expected.replace("$version$", self.version)
            return expected == actual
        if expected == "$$":
            return True
        if expected == "$version$":
            return actual == self.version
        if expected == "$string$":
            return actual == actual.strip()
        if expected.startswith("$choice:"):
            return actual in expected[8:-1].split("|")
        if expected.startswith("$fragments:"):
            return all(f.lower() in actual.lower() for f in expected[11:-1].split("|"))
        if expected.startswith("$external:"):
            cmd = expected[1:-1].split(":", 2)
            if self.externals is not None and cmd[1] in self.externals:
                return actual == self.externals[cmd[1]]
            if len(cmd) <= 2:
                return True
            return all(f.lower() in actual.lower() for f in cmd[2].split("|"))
        pattern = _PATTERNS.get(expected)
        if pattern is None:
            return expected == actual
        return pattern.fullmatch(actual) is not None

    def is_optional(self, item: Any) -> bool:
        if not isinstance(item, dict) or "$optional$" not in item:
            return False
        flag = item["$optional$"]
        if flag is True:
            return True
        if not isinstance(flag, str):
            return False
        if flag.startswith("warning:"):
            return True
        if flag.startswith("version:"):
            return self.version.startswith(flag[8:])
        if flag.startswith("!"):
            return flag[1:] not in self.modes
        return flag in self.modes

    def compare(self, expected: Any, actual: Any, path: str = "") -> str | None:
        """None when actual matches the expected template, else the first difference."""
        if isinstance(expected, dict):
            if not isinstance(actual, dict):
                return f"{path}: expected an object, got {type(actual).__name__}"
            optional = set(expected.get("$optional-properties$", []))
            count_only = set(expected.get("$count-arrays$", []))
            for key in actual:
                # a property the template lists as optional may be there even where the template leaves it out
                if key not in expected and key != "fhir_comments" and not self.pattern and key not in optional:
                    return f"{path}: unexpected property '{key}'"
            for key, value in expected.items():
                if key.startswith("$") or key == "fhir_comments":
                    continue  # template directives ($optional$, and the odd misspelt "$optional")
                if key not in actual:
                    if key in optional or "*" in optional:
                        continue
                    if isinstance(value, list) and all(not isinstance(v, dict) or "$optional$" in v for v in value):
                        continue  # an array whose entries are all marked $optional$ may be left out entirely
                    return f"{path}: missing property '{key}'"
                if key in count_only:
                    if len(actual[key]) != len(value):
                        return f"{path}.{key}: expected {len(value)} items, got {len(actual[key])}"
                    continue
                diff = self.compare(value, actual[key], f"{path}.{key}")
                if diff:
                    return diff
            return None
        if isinstance(expected, list):
            if not isinstance(actual, list):
                return f"{path}: expected an array"
            return self._compare_lists(expected, actual, path)
        if isinstance(expected, str):
            if not isinstance(actual, str):
                return f"{path}: expected string {expected!r}, got {actual!r}"
            if "<div" in expected and "<div" in actual:
                return None  # narrative is not compared
            return None if self.string_matches(expected, actual) else f"{path}: expected {expected!r}, got {actual!r}"
        if isinstance(expected, bool) or isinstance(actual, bool):
            return None if expected is actual else f"{path}: expected {expected!r}, got {actual!r}"
        if expected != actual:
            return f"{path}: expected {expected!r}, got {actual!r}"
        return None

    def _compare_lists(self, expected: list[Any], actual: list[Any], path: str) -> str | None:
        required = [i for i, e in enumerate(expected) if not self.is_optional(e)]
        if not self.pattern and (len(actual) > len(expected) or len(actual) < len(required)):
            return f"{path}: expected {len(required)}..{len(expected)} items, got {len(actual)}"
        # fast path: same order
        if len(actual) == len(expected) and all(
            self.compare(e, a, path) is None for e, a in zip(expected, actual, strict=True)
        ):
            return None
        ok = [[self.compare(e, a, path) is None for a in actual] for e in expected]
        match_of_actual: dict[int, int] = {}

        def assign(ei: int, seen: set[int]) -> bool:
            for ai, good in enumerate(ok[ei]):
                if good and ai not in seen:
                    seen.add(ai)
                    if ai not in match_of_actual or assign(match_of_actual[ai], seen):
                        match_of_actual[ai] = ei
                        return True
            return False

        for ei in required if not self.pattern else range(len(expected)):
            if not assign(ei, set()):
                detail = ""
                for a in actual:
                    d = self.compare(expected[ei], a, f"{path}[{ei}]")
                    if d and (not detail or len(d) > len(detail)):
                        detail = d
                return f"{path}[{ei}]: no matching item ({detail})"
        if self.pattern:
            return None
        for ei, _e in enumerate(expected):
            if ei not in required:
                assign(ei, set())
        for ai in range(len(actual)):
            if ai not in match_of_actual:
                return f"{path}: unexpected item {json.dumps(actual[ai], ensure_ascii=False)[:300]}"
        return None


# running -----------------------------------------------------------------------------------------------


def in_process(
    operation: str, source: InMemorySource, params: Resource, accept_language: str | None, header: dict[str, str]
) -> Resource:
    """Run one tx-suite operation against the engine directly, as a node serves it: the suite's setup
    resources in front of the shipped FHIR core terminology."""
    from changbai.terminology.binding import core_source

    served = LayeredSource(source, core_source())
    if operation == "expand":
        limit = int(header.get("X-TOO-COSTLY-THRESHOLD", "1000"))
        return operations.expand(served, params, accept_language=accept_language, limit=limit)
    if operation == "validate-code":
        return operations.validate_code(served, params, accept_language=accept_language)
    if operation == "cs-validate-code":
        return operations.validate_code_cs(served, params, accept_language=accept_language)
    if operation == "lookup":
        return operations.lookup(served, params, accept_language=accept_language)
    if operation == "translate":
        return operations.translate(served, params)
    if operation == "subsumes":
        return operations.subsumes(served, params)
    if operation == "batch-validate":
        return operations.batch_validate(served, params)
    if operation == "term-caps":
        return operations.terminology_capabilities()
    if operation == "metadata":
        return operations.capability_statement()
    raise ChangbaiError(f"operation {operation} is not supported")


_PATHS = {
    "expand": "ValueSet/$expand",
    "validate-code": "ValueSet/$validate-code",
    "cs-validate-code": "CodeSystem/$validate-code",
    "lookup": "CodeSystem/$lookup",
    "translate": "ConceptMap/$translate",
    "subsumes": "CodeSystem/$subsumes",
    "batch-validate": "ValueSet/$batch-validate-code",
}


_R5_TO_R4_EQUIVALENCE = {
    "related-to": "relatedto",
    "equivalent": "equivalent",
    "source-is-narrower-than-target": "wider",
    "source-is-broader-than-target": "narrower",
    "not-related-to": "disjoint",
}


def to_r4(resource: Any) -> Any:
    """The suite's setup resources are R5; an R4 server is sent their R4 form (as the suite's own runner
    does): R5-only elements dropped, ConceptMap scope and relationship renamed."""
    if isinstance(resource, list):
        return [to_r4(v) for v in resource]
    if not isinstance(resource, dict):
        return resource
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if ":" in key or key.startswith("versionAlgorithm") or key in ("copyrightLabel",):
            continue
        if key == "sourceScopeUri":
            out["sourceUri"] = value
        elif key == "targetScopeUri":
            out["targetUri"] = value
        elif key == "sourceScopeCanonical":
            out["sourceCanonical"] = value
        elif key == "targetScopeCanonical":
            out["targetCanonical"] = value
        elif key == "relationship" and isinstance(value, str):
            if "mode" not in resource:  # ConceptMap.group.unmapped has no equivalence in R4
                out["equivalence"] = _R5_TO_R4_EQUIVALENCE.get(value, "relatedto")
        else:
            out[key] = to_r4(value)
    return out


_R5_EXPANSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion."


def from_r4(resource: Any) -> Any:
    """An R4 answer in the R5 form the recordings are in (what the suite's runner gets from its R4 client's
    conversion): an expansion's property declarations and values out of their cross-version extensions."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ValueSet" or "expansion" not in resource:
        return resource

    def lift(item: dict[str, Any], url: str) -> dict[str, Any]:
        mine = [e for e in item.get("extension", []) if e.get("url") == url]
        if not mine:
            return item
        out = {k: v for k, v in item.items() if k != "extension"}
        rest = [e for e in item["extension"] if e.get("url") != url]
        if rest:
            out["extension"] = rest
        out["property"] = []
        for ext in mine:
            prop: dict[str, Any] = {}
            for part in ext.get("extension", []):
                value = next(((k, v) for k, v in part.items() if k.startswith("value")), None)
                if value is not None:
                    prop.update({part["url"]: value[1]} if part["url"] in ("code", "uri") else {value[0]: value[1]})
            out["property"].append(prop)
        return out

    def convert(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            item = lift(item, _R5_EXPANSION + "contains.property")
            if "contains" in item:
                item = {**item, "contains": convert(item["contains"])}
            out.append(item)
        return out

    expansion = lift(resource["expansion"], _R5_EXPANSION + "property")
    if "contains" in expansion:
        expansion = {**expansion, "contains": convert(expansion["contains"])}
    return {**resource, "expansion": expansion}


class HttpHandler:
    """Runs the tests against a FHIR server: each suite's setup resources are PUT first (once per suite),
    then every operation is POSTed with its Parameters. ``client`` is an httpx.Client on the FHIR base;
    ``fresh`` (optional) returns a client on an empty server, called before each suite is loaded, since
    suites reuse ids and urls for different content."""

    def __init__(self, client: Any, fresh: Callable[[], Any] | None = None) -> None:
        self.client = client
        self.fresh = fresh
        self.loaded: int | None = None
        self.load_errors: list[str] = []
        self.refused: list[Resource] = []

    def _load(self, source: InMemorySource) -> None:
        if self.loaded == id(source):
            return
        self.loaded = id(source)
        self.refused = []
        if self.fresh is not None:
            self.client = self.fresh()
        for r in source:
            # POST, not PUT: suites give several versions of one code system the same id
            resp = self.client.post(f"/{r['resourceType']}", json=to_r4(r))
            if resp.status_code >= 400:
                # invalid FHIR (a few suites test broken definitions): the store rightly refuses it, so it
                # travels with each request as a tx-resource, the way the suite's own runner sends every one
                self.load_errors.append(f"{r['resourceType']}/{r.get('id')}: {resp.text[:200]}")
                self.refused.append(r)

    def __call__(
        self,
        operation: str,
        source: InMemorySource,
        params: Resource,
        accept_language: str | None,
        header: dict[str, str],
    ) -> Resource:
        from changbai.errors import ChangbaiError as _Error

        if operation == "metadata":
            resp = self.client.get("/metadata")
        elif operation == "term-caps":
            resp = self.client.get("/metadata", params={"mode": "terminology"})
        else:
            self._load(source)
            headers = {"accept-language": accept_language} if accept_language else {}
            if self.refused:
                extra = [{"name": "tx-resource", "resource": to_r4(r)} for r in self.refused]
                params = {**params, "parameter": [*params.get("parameter", []), *extra]}
            resp = self.client.post(f"/{_PATHS[operation]}", json=params, headers={**headers, **header})
        body = resp.json()
        if resp.status_code >= 400:
            error = _Error(f"HTTP {resp.status_code}", status=resp.status_code)
            error.outcome = lambda: body  # type: ignore[method-assign]
            raise error
        return body


@dataclass
class Outcome:
    suite: str
    test: str
    passed: bool
    message: str = ""

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.test}"


def selected(entry: dict[str, Any], modes: frozenset[str]) -> bool:
    mode = entry.get("mode")
    if entry.get("disabled"):
        return False
    if entry.get("version") and SERVER_VERSION.startswith(entry["version"].lstrip("!")) == entry["version"].startswith(
        "!"
    ):
        return False
    return mode is None or mode in modes


def run_suite(
    root: Path, handler: Handler = in_process, modes: frozenset[str] = MODES, only: str | None = None
) -> list[Outcome]:
    """Run every selected test; ``root`` is the suite's tests/ folder."""
    cases = read_json(root / "test-cases.json")
    comparer = Comparer(modes=modes)
    defaults = read_json(root / "parameters-default.json") if (root / "parameters-default.json").exists() else None
    results: list[Outcome] = []
    for suite in cases["suites"]:
        if not selected(suite, modes):
            continue
        source = InMemorySource(read_json(root / f) for f in suite.get("setup", []))
        for test in suite["tests"]:
            if not selected(test, modes) or (only and only not in test["name"]):
                continue
            results.append(_run_test(root, suite["name"], test, source, handler, comparer, modes, defaults))
    return results


def _run_test(
    root: Path,
    suite: str,
    test: dict[str, Any],
    source: InMemorySource,
    handler: Handler,
    comparer: Comparer,
    modes: frozenset[str],
    defaults: Resource | None,
) -> Outcome:
    params: Resource = read_json(root / test["request"]) if test.get("request") else {}
    if params and params.get("resourceType") == "Parameters":
        params = {"resourceType": "Parameters", "parameter": list(params.get("parameter", []))}
        if test.get("profile"):
            params["parameter"].extend(read_json(root / test["profile"]).get("parameter", []))
        if test.get("lenient-display"):
            params["parameter"].append({"name": "lenient-display-validation", "valueBoolean": True})
    response_key = next((f"response:{m}" for m in sorted(modes) if f"response:{m}" in test), "response")
    if not (root / test[response_key]).exists():
        return Outcome(suite, test["name"], False, f"the suite lacks the file {test[response_key]}")
    expected = read_json(root / test[response_key])
    header = {}
    if test.get("header"):
        header[test["header"]["name"]] = test["header"]["value"]
    try:
        actual = handler(test["operation"], source, params, test.get("Accept-Language"), header)
        error = None
    except ChangbaiError as exc:
        actual = exc.outcome()
        error = exc
    except Exception as exc:  # a crash is a failed test, with its reason recorded
        return Outcome(suite, test["name"], False, f"crash: {type(exc).__name__}: {exc}")
    status = error.status if error is not None else 200
    wanted = str(test.get("http-code") or "2xx")
    if str(status)[0] != wanted[0]:
        detail = json.dumps(actual, ensure_ascii=False)[:300]
        return Outcome(suite, test["name"], False, f"expected HTTP {wanted}, got {status}: {detail}")
    actual = from_r4(actual)
    if test["operation"] in ("metadata", "term-caps"):  # the runner checks these in pattern mode
        comparer = Comparer(modes=comparer.modes, version=comparer.version, pattern=True)
    diff = comparer.compare(expected, scrub(actual))
    return Outcome(suite, test["name"], diff is None, diff or "")


#: Extensions the suite's runner keeps when it scrubs a response (others are server detail and removed).
MANAGED_EXTENSIONS = frozenset(
    "http://hl7.org/fhir/StructureDefinition/" + name
    for name in (
        "codesystem-alternate",
        "codesystem-conceptOrder",
        "codesystem-label",
        "coding-sctdescid",
        "itemWeight",
        "rendering-style",
        "rendering-xhtml",
        "translation",
        "valueset-concept-definition",
        "valueset-conceptOrder",
        "valueset-deprecated",
        "valueset-label",
        "valueset-supplement",
        "alternate-code-use",
        "alternate-code-status",
        "operationoutcome-message-id",
        "structuredefinition-standards-status",
        "valueset-unclosed",
        "valueset-unclosed-reason",
    )
) | frozenset(
    "http://hl7.org/fhir/test/" + name
    for name in (
        "CodeSystem/de-multi",
        "CodeSystem/en-multi",
        "StructureDefinition/unknown-extension-1",
        "StructureDefinition/unknown-extension-3",
        "StructureDefinition/unknown-extension-4",
        "StructureDefinition/unknown-extension-5",
        "ValueSet/extensions-bad-supplement",
        "ValueSet/simple-all",
        "ValueSet/simple-enumerated",
        "ValueSet/simple-filter-isa",
    )
)


def _managed(ext: Any) -> bool:
    url = ext.get("url", "") if isinstance(ext, dict) else ""
    absolute = url.startswith(("http:", "https:", "urn:"))
    return not absolute or url in MANAGED_EXTENSIONS


def scrub(resource: Any, key: str | None = None) -> Any:
    """What the suite's runner (TxTesterScrubbers, TxTesterSorters) does to a response before comparing:
    narrative and meta removed; extensions that are not among the ones the tests manage dropped
    (ValueSet.compose is left alone); issue diagnostics dropped, and issues that are only diagnostics;
    'diagnostics' output parameters dropped; the parts of a 'message' ("; "-joined) put in order."""
    if isinstance(resource, list):
        return [scrub(v, key) for v in resource]
    if not isinstance(resource, dict):
        return resource
    kind = resource.get("resourceType")
    out = {}
    for k, v in resource.items():
        if k in ("text", "meta") and kind:
            continue
        if k == "compose" and kind == "ValueSet":
            out[k] = v
            continue
        if k in ("extension", "modifierExtension") and isinstance(v, list):
            kept = [scrub(e, k) for e in v if _managed(e)]
            if kept:
                out[k] = kept
            continue
        out[k] = scrub(v, k)
    if kind == "OperationOutcome":
        issues = [i for i in out.get("issue", []) if "details" in i or "diagnostics" not in i]
        out["issue"] = [
            {k: v for k, v in i.items() if k != "diagnostics" or "x-request-id" in str(v).lower()} for i in issues
        ]
    if kind == "Parameters":
        params = [p for p in out.get("parameter", []) if p.get("name") != "diagnostics"]
        for p in params:
            if p.get("name") == "message" and isinstance(p.get("valueString"), str) and "; " in p["valueString"]:
                p["valueString"] = "; ".join(sorted(p["valueString"].split("; ")))
        out["parameter"] = params
    return out


def summary(results: list[Outcome]) -> str:
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed"


def record(results: list[Outcome], path: Path, passed_http: int | None = None) -> None:
    """Write the known-failures file: the pass figures and every failing test grouped by cause. A test keeps
    the cause it was filed under; a newly failing one goes to 'unexplained' until someone files it."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    groups = old.get("failures", [])
    cause_of = {name: g["cause"] for g in groups for name in g.get("tests", {})}
    reasons = {g["cause"]: g["reason"] for g in groups}
    filed: dict[str, dict[str, str]] = {}
    for r in results:
        if not r.passed:
            filed.setdefault(cause_of.get(r.name, "unexplained"), {})[r.name] = r.message[:300]
    reasons.setdefault("unexplained", "to be explained")
    data = {
        "about": old.get("about", "Failing tests of the HL7 tx-ecosystem suite, grouped by cause."),
        "total": len(results),
        "passed": sum(r.passed for r in results),
        "passed_http": passed_http if passed_http is not None else old.get("passed_http", 0),
        "failures": [
            {"cause": cause, "reason": reasons[cause], "tests": filed[cause]}
            for cause in [*reasons, *sorted(set(filed) - set(reasons))]
            if cause in filed
        ],
    }
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the HL7 tx-ecosystem tests against the engine")
    parser.add_argument("root", type=Path, help="the suite's tests/ folder")
    parser.add_argument("--filter", default=None)
    parser.add_argument("--failures", action="store_true", help="list failing tests with reasons")
    parser.add_argument("--record", type=Path, help="write the known-failures file")
    args = parser.parse_args(argv)
    results = run_suite(args.root, only=args.filter)
    if args.record:
        record(results, args.record)
    if args.failures:
        for r in results:
            if not r.passed:
                print(f"{r.name}: {r.message[:400]}")
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
