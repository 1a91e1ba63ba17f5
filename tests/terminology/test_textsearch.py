"""The $expand text filter answers from an index of character pairs exactly what a scan of every text would."""

from __future__ import annotations

import random

from changbai.terminology import operations as op
from changbai.terminology.source import InMemorySource
from changbai.terminology.textsearch import TextIndex, words_of

_PARTS = ["高血压", "糖尿病", "慢性", "急性", "肾", "Hypertension", "Type 2", "左", "右", "伴"]


def test_index_finds_what_a_scan_finds():
    rng = random.Random(5)
    texts = [(f"C{i}", "\n".join(rng.sample(_PARTS, 3)).lower()) for i in range(300)]
    index = TextIndex(texts)
    queries = ["高血压", "慢", "肾 慢性", "hyper", "TYPE", "type 2", "急性高", "压糖", "nothing", "c1", "2\n"]
    for query in queries:
        words = words_of(query)
        scanned = {code for code, text in texts if all(w in text for w in words)}
        assert index.search(words) == scanned, query


def test_filtered_expansion_of_a_big_value_set():
    """Above the scan threshold the expansion asks the index; a display the value set gives is matched by
    that display, and the answer keeps the value set's order."""
    concepts = [{"code": f"C{i:04d}", "display": f"{_PARTS[i % len(_PARTS)]} {i}"} for i in range(1500)]
    concepts[7]["designation"] = [{"language": "en", "value": "Renal colic"}]
    cs = {"resourceType": "CodeSystem", "url": "http://example.org/cs/t", "status": "active", "content": "complete"}
    cs["concept"] = concepts
    listed = [{"code": c["code"]} for c in concepts]
    listed[3]["display"] = "Named by the value set"

    def value_set(name, include):
        return {
            "resourceType": "ValueSet",
            "url": f"http://example.org/vs/{name}",
            "status": "active",
            "compose": {"include": [include]},
        }

    source = InMemorySource(
        [cs, value_set("all", {"system": cs["url"]}), value_set("listed", {"system": cs["url"], "concept": listed})]
    )

    def found(name, text):
        answer = op.expand(source, {"url": f"http://example.org/vs/{name}", "filter": text, "count": 2000})
        return [c["code"] for c in answer["expansion"].get("contains", [])]

    assert found("all", "慢性") == [c["code"] for c in concepts if "慢性" in c["display"]]
    assert found("all", "renal") == ["C0007"]  # by a designation
    both = [c["code"] for c in concepts if "Hypertension" in c["display"] and "15" in c["display"]]
    assert found("all", "hypertension 15") == both and len(both) > 1
    assert found("all", "c0042") == ["C0042"]  # by the code itself
    assert found("listed", "named by") == ["C0003"]
    assert "C0003" not in found("listed", _PARTS[3])  # its code system display no longer counts
