"""The operations per the R4 OperationDefinitions, over a small code system written for the tests."""

from __future__ import annotations

import pytest

from changbai.errors import ChangbaiError
from changbai.terminology import operations as op
from changbai.terminology.source import InMemorySource
from changbai.terminology.txtests import from_r4

CS = "http://example.org/cs/clinic"
CS2 = "http://example.org/cs/other"


def concept(code, display, *children, en=None, status=None, kind=None):
    c = {"code": code, "display": display}
    if en:
        c["designation"] = [{"language": "en", "value": en}]
    props = []
    if status:
        props.append({"code": "status", "valueCode": status})
    if kind:
        props.append({"code": "kind", "valueCode": kind})
    if props:
        c["property"] = props
    if children:
        c["concept"] = list(children)
    return c


@pytest.fixture
def source():
    cs = {
        "resourceType": "CodeSystem",
        "url": CS,
        "version": "2",
        "name": "Clinic",
        "status": "active",
        "content": "complete",
        "language": "zh-CN",
        "property": [{"code": "status", "type": "code"}, {"code": "kind", "type": "code"}],
        "concept": [
            concept(
                "D",
                "疾病",
                concept(
                    "D1",
                    "高血压",
                    concept("D1.1", "原发性高血压", en="Essential hypertension"),
                    concept("D1.2", "继发性高血压", status="retired"),
                    en="Hypertension",
                ),
                concept("D2", "糖尿病", concept("D2.1", "2型糖尿病", kind="chronic"), en="Diabetes"),
                en="Disease",
            ),
            concept("S", "症状", concept("S1", "头痛", en="Headache")),
        ],
    }
    old = {**cs, "version": "1", "concept": [concept("D", "疾病(旧)")]}

    def vs(id, compose):
        return {
            "resourceType": "ValueSet",
            "url": f"http://example.org/vs/{id}",
            "version": "1",
            "status": "active",
            "compose": compose,
        }

    inc = lambda *filters: {"include": [{"system": CS, "filter": list(filters)}]}  # noqa: E731
    resources = [
        cs,
        old,
        vs("all", {"include": [{"system": CS}]}),
        vs("isa", inc({"property": "concept", "op": "is-a", "value": "D1"})),
        vs("desc", inc({"property": "concept", "op": "descendent-of", "value": "D1"})),
        vs("nota", inc({"property": "concept", "op": "is-not-a", "value": "D"})),
        vs("regex", inc({"property": "code", "op": "regex", "value": "D[0-9]\\.1"})),
        vs("eq", inc({"property": "kind", "op": "=", "value": "chronic"})),
        vs("in", inc({"property": "concept", "op": "in", "value": "D1,S1"})),
        vs("exists", inc({"property": "kind", "op": "exists", "value": "true"})),
        vs("gen", inc({"property": "concept", "op": "generalizes", "value": "D1.1"})),
        vs(
            "enum-ex",
            {
                "include": [{"system": CS, "concept": [{"code": "D1"}, {"code": "S1"}]}],
                "exclude": [{"system": CS, "concept": [{"code": "S1"}]}],
            },
        ),
        vs("import", {"include": [{"valueSet": ["http://example.org/vs/isa"]}]}),
        vs("v1", {"include": [{"system": CS, "version": "1"}]}),
        {
            "resourceType": "ConceptMap",
            "url": "http://example.org/cm/1",
            "version": "1",
            "status": "active",
            "group": [
                {
                    "source": CS,
                    "target": CS2,
                    "element": [
                        {"code": "D1.1", "target": [{"code": "X1", "equivalence": "equivalent"}]},
                        {"code": "D1", "target": [{"code": "X0", "equivalence": "wider"}]},
                    ],
                }
            ],
        },
    ]
    return InMemorySource(resources)


def params(answer):
    out = {}
    for p in answer["parameter"]:
        out.setdefault(p["name"], []).append(p)
    return out


def codes(vs_answer):
    return [c["code"] for c in vs_answer["expansion"].get("contains", [])]


def expand(source, name, **extra):
    """$expand as a flat list (these tests are about which codes are selected; nesting has its own test)."""
    return op.expand(source, {"url": f"http://example.org/vs/{name}", "excludeNested": True, **extra})


def test_lookup_returns_the_defined_output_parameters(source):
    answer = op.lookup(
        source,
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "system", "valueUri": CS}, {"name": "code", "valueCode": "D1"}],
        },
    )
    p = params(answer)
    assert p["name"][0]["valueString"] == "Clinic"
    assert p["version"][0]["valueString"] == "2"  # the newest version when none is asked for
    assert p["display"][0]["valueString"] == "高血压"
    props = {(q["part"][0]["valueCode"], q["part"][1].get("valueCode")) for q in p["property"]}
    assert ("parent", "D") in props and ("child", "D1.1") in props
    assert any(
        part["name"] == "value" and part.get("valueString") == "Hypertension"
        for d in p["designation"]
        for part in d["part"]
    )
    older = params(op.lookup(source, {"system": CS, "code": "D", "version": "1"}))
    assert older["display"][0]["valueString"] == "疾病(旧)"


def test_lookup_of_unknown_code_or_system_is_an_error_outcome(source):
    with pytest.raises(ChangbaiError) as exc:
        op.lookup(source, {"system": CS, "code": "nope"})
    assert "Unknown code 'nope'" in exc.value.outcome()["issue"][0]["details"]["text"]
    with pytest.raises(ChangbaiError) as exc:
        op.lookup(source, {"system": "http://nowhere", "code": "x"})
    assert exc.value.status == 404


def test_validate_code_against_value_set_and_code_system(source):
    good = params(op.validate_code(source, {"url": "http://example.org/vs/isa", "system": CS, "code": "D1.1"}))
    assert good["result"][0]["valueBoolean"] is True and good["display"][0]["valueString"] == "原发性高血压"
    bad = params(op.validate_code(source, {"url": "http://example.org/vs/isa", "system": CS, "code": "S1"}))
    assert bad["result"][0]["valueBoolean"] is False
    assert "was not found in the value set 'http://example.org/vs/isa|1'" in bad["message"][0]["valueString"]
    wrong_display = params(
        op.validate_code(
            source, {"url": "http://example.org/vs/all", "coding": {"system": CS, "code": "S1", "display": "牙痛"}}
        )
    )
    assert wrong_display["result"][0]["valueBoolean"] is False
    assert "Wrong Display Name '牙痛'" in wrong_display["message"][0]["valueString"]
    cs_check = params(op.validate_code_cs(source, {"url": CS, "code": "D2.1"}))
    assert cs_check["result"][0]["valueBoolean"] is True
    cc = params(
        op.validate_code(
            source,
            {
                "url": "http://example.org/vs/isa",
                "codeableConcept": {"coding": [{"system": CS, "code": "S1"}, {"system": CS, "code": "D1"}]},
            },
        )
    )
    assert cc["result"][0]["valueBoolean"] is True and cc["code"][0]["valueCode"] == "D1"
    retired = params(op.validate_code(source, {"url": "http://example.org/vs/all", "system": CS, "code": "D1.2"}))
    assert retired["inactive"][0]["valueBoolean"] is True


def test_subsumes(source):
    def outcome(a, b):
        return op.subsumes(source, {"system": CS, "codeA": a, "codeB": b})["parameter"][0]["valueCode"]

    assert outcome("D", "D1.1") == "subsumes"
    assert outcome("D1.1", "D") == "subsumed-by"
    assert outcome("D1", "D1") == "equivalent"
    assert outcome("D1", "S1") == "not-subsumed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("isa", ["D1", "D1.1", "D1.2"]),
        ("desc", ["D1.1", "D1.2"]),
        ("nota", ["S", "S1"]),
        ("regex", ["D1.1", "D2.1"]),
        ("eq", ["D2.1"]),
        ("in", ["D1", "S1"]),
        ("exists", ["D2.1"]),
        ("gen", ["D", "D1", "D1.1"]),
        ("enum-ex", ["D1"]),
        ("import", ["D1", "D1.1", "D1.2"]),
        ("v1", ["D"]),
    ],
)
def test_expand_filters(source, name, expected):
    assert codes(expand(source, name)) == expected


def tree(items):
    return [(c["code"], tree(c.get("contains", []))) for c in items]


def test_expansion_nests_by_the_hierarchy_unless_excludenested(source):
    def nested(name, **extra):
        return tree(op.expand(source, {"url": f"http://example.org/vs/{name}", **extra})["expansion"]["contains"])

    d1 = ("D1", [("D1.1", []), ("D1.2", [])])
    assert nested("all") == [("D", [d1, ("D2", [("D2.1", [])])]), ("S", [("S1", [])])]
    assert nested("isa") == [d1]  # a filter's codes sit under their selected parent
    # activeOnly leaves out the retired D1.2; a left-out parent would hand its children up
    assert nested("isa", activeOnly=True) == [("D1", [("D1.1", [])])]
    # flat when asked, when a page is taken, or when a concept list / import selects the codes
    assert nested("all", excludeNested=True)[0] == ("D", [])
    assert nested("all", offset=1, count=2) == [("D1", []), ("D1.1", [])]
    assert nested("import") == [("D1", []), ("D1.1", []), ("D1.2", [])]
    # the retired code says why it is inactive (R5 concept-properties#status, in its R4 cross-version extension)
    answer = op.expand(source, {"url": "http://example.org/vs/isa", "excludeNested": True})
    retired = next(c for c in answer["expansion"]["contains"] if c["code"] == "D1.2")
    assert retired["extension"] == [
        {
            "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property",
            "extension": [{"url": "code", "valueCode": "status"}, {"url": "value", "valueCode": "retired"}],
        }
    ]
    assert answer["expansion"]["extension"] == [
        {
            "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.property",
            "extension": [
                {"url": "code", "valueCode": "status"},
                {"url": "uri", "valueUri": "http://hl7.org/fhir/concept-properties#status"},
            ],
        }
    ]


def test_expand_text_filter_paging_active_only_and_language(source):
    assert codes(expand(source, "all", filter="高血压")) == ["D1", "D1.1", "D1.2"]
    page = expand(source, "all", offset=2, count=3)
    assert page["expansion"]["total"] == 8 and codes(page) == ["D1.1", "D1.2", "D2"]
    assert "D1.2" not in codes(expand(source, "all", activeOnly=True))
    english = expand(source, "isa", displayLanguage="en")
    assert english["expansion"]["contains"][0]["display"] == "Hypertension"
    used = [p["valueUri"] for p in english["expansion"]["parameter"] if p["name"] == "used-codesystem"]
    assert used == [f"{CS}|2"]


def test_expand_of_unknown_value_set_is_not_found(source):
    with pytest.raises(ChangbaiError) as exc:
        expand(source, "missing")
    assert exc.value.status == 404
    assert exc.value.outcome()["resourceType"] == "OperationOutcome"


def test_translate_forward_and_reverse_with_equivalence(source):
    fwd = params(op.translate(source, {"sourceSystem": CS, "sourceCode": "D1.1", "targetSystem": CS2}))
    assert fwd["result"][0]["valueBoolean"] is True
    parts = {p["name"]: p for p in fwd["match"][0]["part"]}
    assert parts["concept"]["valueCoding"] == {"system": CS2, "code": "X1"}
    assert parts["equivalence"]["valueCode"] == "equivalent"
    rev = params(op.translate(source, {"targetCode": "X0", "targetSystem": CS2, "sourceSystem": CS}))
    parts = {p["name"]: p for p in rev["match"][0]["part"]}
    assert parts["source"]["valueCoding"] == {"system": CS, "code": "D1"}
    assert parts["equivalence"]["valueCode"] == "narrower"  # read backwards, wider becomes narrower
    none = params(op.translate(source, {"sourceSystem": CS, "sourceCode": "S1"}))
    assert none["result"][0]["valueBoolean"] is False


def test_batch_answers_a_bad_entry_in_place_and_entries_override_batch_parameters(source):
    vs = {"resourceType": "ValueSet", "url": "urn:x:vs", "status": "active", "compose": {"include": [{"system": CS}]}}
    coding = {"system": CS, "code": "S1", "display": "wrong"}
    answer = op.batch_validate(
        source,
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "tx-resource", "resource": vs},
                {"name": "url", "valueUri": "urn:x:vs"},
                {"name": "lenient-display-validation", "valueBoolean": True},
                {
                    "name": "validation",
                    "resource": {
                        "resourceType": "Parameters",
                        "parameter": [{"name": "coding", "valueCoding": coding}],
                    },
                },
                {
                    "name": "validation",
                    "resource": {
                        "resourceType": "Parameters",
                        "parameter": [{"name": "codingX", "valueCoding": coding}],
                    },
                },
                {
                    "name": "validation",
                    "resource": {
                        "resourceType": "Parameters",
                        "parameter": [
                            {"name": "coding", "valueCoding": coding},
                            {"name": "lenient-display-validation", "valueBoolean": False},
                        ],
                    },
                },
            ],
        },
    )
    lenient, bad, strict = (p["resource"] for p in answer["parameter"])
    assert {p["name"]: p.get("valueBoolean") for p in lenient["parameter"]}["result"] is True
    assert bad["resourceType"] == "OperationOutcome"
    assert "Unable to find code to validate" in bad["issue"][0]["details"]["text"]
    assert {p["name"]: p.get("valueBoolean") for p in strict["parameter"]}["result"] is False


def test_supplements_apply_only_where_named(source):
    supplement = {
        "resourceType": "CodeSystem",
        "url": "http://example.org/cs/clinic-fr",
        "version": "1",
        "status": "active",
        "content": "supplement",
        "supplements": CS,
        "concept": [{"code": "S1", "designation": [{"language": "fr", "value": "Mal de tête"}]}],
    }
    params = [
        {"name": "tx-resource", "resource": supplement},
        {"name": "system", "valueUri": CS},
        {"name": "code", "valueCode": "S1"},
    ]

    def designations(extra):
        out = op.lookup(source, {"resourceType": "Parameters", "parameter": params + extra})
        return [
            part["valueString"]
            for p in out["parameter"]
            if p["name"] == "designation"
            for part in p["part"]
            if part["name"] == "value"
        ]

    assert "Mal de tête" not in designations([])
    assert "Mal de tête" in designations([{"name": "useSupplement", "valueCanonical": supplement["url"]}])
    # the designation says which supplement it came from, and the answer which supplements it used
    used = [{"name": "useSupplement", "valueCanonical": supplement["url"]}]
    out = op.lookup(source, {"resourceType": "Parameters", "parameter": params + used})["parameter"]
    french = next(
        p["part"] for p in out if p["name"] == "designation" and {"name": "language", "valueCode": "fr"} in p["part"]
    )
    assert {"name": "source", "valueCanonical": "http://example.org/cs/clinic-fr|1"} in french
    assert {"name": "used-supplement", "valueCanonical": "http://example.org/cs/clinic-fr|1"} in out


def test_expansion_designations_limited_to_the_ones_asked_for(source):
    def designations(*wanted):
        extra = [{"name": "designation", "valueString": w} for w in wanted]
        answer = op.expand(
            source,
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "url", "valueUri": "http://example.org/vs/isa"},
                    {"name": "includeDesignations", "valueBoolean": True},
                    {"name": "excludeNested", "valueBoolean": True},
                    *extra,
                ],
            },
        )
        return {c["code"]: [d["value"] for d in c.get("designation", [])] for c in answer["expansion"]["contains"]}

    assert designations()["D1.1"] == ["Essential hypertension"]
    assert designations("urn:ietf:bcp:47|en")["D1.1"] == ["Essential hypertension"]
    assert designations("urn:ietf:bcp:47|fr")["D1.1"] == []


def test_expansion_shows_labels_order_weight_and_marks_a_fragment_unclosed():
    sd = "http://hl7.org/fhir/StructureDefinition/"
    cs = {
        "resourceType": "CodeSystem",
        "url": "http://example.org/cs/frag",
        "version": "1",
        "status": "active",
        "content": "fragment",
        "concept": [
            {
                "code": "a",
                "display": "A",
                "extension": [
                    {"url": sd + "codesystem-label", "valueString": "1."},
                    {"url": sd + "codesystem-conceptOrder", "valueInteger": 2},
                    {"url": sd + "rendering-style", "valueString": "font-weight: bold"},
                ],
            },
            {"code": "b", "display": "B", "extension": [{"url": sd + "itemWeight", "valueDecimal": 0.5}]},
        ],
    }
    vs = {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/frag",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": cs["url"],
                    "concept": [
                        {"code": "a", "extension": [{"url": sd + "valueset-label", "valueString": "i."}]},
                        {"code": "b", "extension": [{"url": sd + "valueset-deprecated", "valueCode": "true"}]},
                    ],
                }
            ]
        },
    }
    expansion = from_r4(op.expand(InMemorySource([cs, vs]), {"url": vs["url"]}))["expansion"]  # R5 form
    a, b = expansion["contains"]
    assert a["property"] == [{"code": "label", "valueString": "i."}, {"code": "order", "valueDecimal": 2}]
    assert a["extension"] == [{"url": sd + "rendering-style", "valueString": "font-weight: bold"}]
    assert b["property"] == [{"code": "weight", "valueDecimal": 0.5}]
    assert b["extension"] == [{"url": sd + "valueset-deprecated", "valueCode": "true"}]
    assert {p["code"]: p["uri"] for p in expansion["property"]} == {
        "label": "http://hl7.org/fhir/concept-properties#label",
        "order": "http://hl7.org/fhir/concept-properties#order",
        "weight": "http://hl7.org/fhir/concept-properties#itemWeight",
    }
    assert {"name": "used-fragment", "valueUri": "http://example.org/cs/frag|1"} in expansion["parameter"]
    assert expansion["extension"][0] == {"url": sd + "valueset-unclosed", "valueBoolean": True}


def test_excluding_one_version_of_a_code_system(source):
    def run(compose):
        vs = {"resourceType": "ValueSet", "url": "http://example.org/vs/x", "status": "active", "compose": compose}
        answer = op.expand(source, {"valueSet": vs, "excludeNested": True})["expansion"]
        return answer, [(c.get("version"), c["code"]) for c in answer.get("contains", [])]

    # another version excluded: its codes go, whatever version includes them (versionsMatch, echoed)
    answer, found = run({"include": [{"system": CS, "version": "2"}], "exclude": [{"system": CS, "version": "1"}]})
    assert [code for _v, code in found] == ["D1", "D1.1", "D1.2", "D2", "D2.1", "S", "S1"]
    assert {"name": "versionsMatch", "valueBoolean": True} in answer["parameter"]
    # both versions included: an exclude naming one version removes the code of that version only
    answer, found = run(
        {
            "include": [{"system": CS, "version": "1"}, {"system": CS, "version": "2"}],
            "exclude": [{"system": CS, "version": "1", "concept": [{"code": "D"}]}],
        }
    )
    assert ("2", "D") in found and ("1", "D") not in found
    assert not any(p["name"] == "versionsMatch" for p in answer["parameter"])
