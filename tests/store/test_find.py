"""Conditional lookups (``Unit.find``, conditional delete) answer ``identifier=system|value`` with a statement
compiled once; they must find exactly what the general search compiler finds: current versions only,
deleted resources left out, the searched type only, escapes read the same way."""

from __future__ import annotations

from urllib.parse import urlencode

from changbai.store.search import Clause, InIndex, TokenLookup, _token_only, match_ids
from changbai.store.urls import parse_query


def patient(id: str, *identifiers: tuple[str | None, str]) -> dict:
    return {
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"value": v} if s is None else {"system": s, "value": v} for s, v in identifiers],
    }


ODD = "A|B,C\\D"  # a value with the characters FHIR search escapes
ODD_QUERY = "A\\|B\\,C\\\\D"

#: (type, query, answered by the compiled statement)
QUERIES = [
    ("Patient", "identifier=urn:mrn|M1", True),
    ("Patient", "identifier=urn:other|X1", True),
    ("Patient", "identifier=urn:mrn|M2", True),  # only in an old version
    ("Patient", "identifier=urn:mrn|M3", True),  # the current version
    ("Patient", "identifier=urn:mrn|M4", True),  # deleted
    ("Patient", "identifier=urn:mrn|M5", True),  # three of them
    ("Patient", "identifier=urn:mrn|nobody", True),
    ("Patient", urlencode({"identifier": f"urn:odd|{ODD_QUERY}"}), True),
    ("Encounter", "identifier=urn:mrn|M1", True),  # the same token on another type
    ("Encounter", "identifier=urn:visit|V1", True),
    ("Patient", "identifier=M1", False),  # any system
    ("Patient", "identifier=|NS1", False),  # no system
    ("Patient", "identifier=urn:mrn|", False),  # any value of the system
    ("Patient", "identifier=urn:mrn|M1,urn:mrn|M3", False),
    ("Patient", "identifier:not=urn:mrn|M1", False),
    ("Patient", "identifier=urn:mrn|M1&_id=a", False),
    ("Patient", "_id=a", False),
]


def general(unit, rtype: str, query: str, limit: int | None) -> list[tuple[str, int]]:
    """What the search compiler makes of the same request (the lookup built into Core)."""
    request = unit._parse(rtype, parse_query(query))
    unit.pipeline.run_search(unit.conn, unit.ctx, request)
    request.clauses = [
        Clause(c.name, InIndex(c.build.rids) if isinstance(c.build, TokenLookup) else c.build) for c in request.clauses
    ]
    assert _token_only(request) is None
    return match_ids(unit, request, limit)


def test_conditional_lookups_find_what_the_search_compiler_finds(repo):
    with repo.unit() as unit:
        unit.put_many(
            [
                patient("a", ("urn:mrn", "M1"), ("urn:other", "X1")),
                patient("b", ("urn:mrn", "M2")),
                patient("c", ("urn:mrn", "M4")),
                patient("d", ("urn:mrn", "M5")),
                patient("e", ("urn:mrn", "M5")),
                patient("f", ("urn:mrn", "M5"), (None, "NS1")),
                patient("g", ("urn:odd", ODD)),
                {
                    "resourceType": "Encounter",
                    "id": "v1",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "identifier": [{"system": "urn:visit", "value": "V1"}, {"system": "urn:mrn", "value": "M1"}],
                },
            ]
        )
    with repo.unit() as unit:
        unit.update("Patient", "b", patient("b", ("urn:mrn", "M3")))
        unit.delete("Patient", "c")
    with repo.unit() as unit:
        answers = {}
        for rtype, query, compiled in QUERIES:
            request = unit._parse(rtype, parse_query(query))
            assert (_token_only(request) is not None) == compiled, query
            everything = match_ids(unit, request, None)
            assert sorted(everything) == sorted(general(unit, rtype, query, None)), query
            found = unit.find(rtype, query)
            if len(everything) <= 2:
                assert sorted(found) == sorted(general(unit, rtype, query, 2)), query
            else:  # at most two of them, as the general statement gives
                assert len(found) == len(general(unit, rtype, query, 2)) == 2 and set(found) <= set(everything)
            searched = unit.search(rtype, [*parse_query(query), ("_count", "10")])
            assert sorted((m.id, m.version) for m in searched.matches) == sorted(everything), query
            answers[query, rtype] = sorted(id for id, _ in everything)
    assert answers["identifier=urn:mrn|M1", "Patient"] == ["a"]
    assert answers["identifier=urn:mrn|M2", "Patient"] == []
    assert answers["identifier=urn:mrn|M3", "Patient"] == ["b"]
    assert answers["identifier=urn:mrn|M4", "Patient"] == []
    assert answers["identifier=urn:mrn|M5", "Patient"] == ["d", "e", "f"]
    assert answers[urlencode({"identifier": f"urn:odd|{ODD_QUERY}"}), "Patient"] == ["g"]
    assert answers["identifier=urn:mrn|M1", "Encounter"] == ["v1"]
    assert answers["identifier=|NS1", "Patient"] == ["f"]


def test_conditional_writes_by_identifier(repo):
    """If-None-Exist, conditional update and conditional delete go through the same lookup."""
    with repo.unit() as unit:
        created = unit.create(patient("x", ("urn:mrn", "Q1")), if_none_exist="identifier=urn:mrn|Q1")
        assert created.status == "created"
        again = unit.create(patient("y", ("urn:mrn", "Q1")), if_none_exist="identifier=urn:mrn|Q1")
        assert again.status == "unchanged" and again.stored.id == created.stored.id
        changed = {**patient("x", ("urn:mrn", "Q1")), "active": True}
        del changed["id"]
        updated = unit.conditional_update("Patient", "identifier=urn:mrn|Q1", changed)
    assert updated.status == "updated" and updated.stored.id == created.stored.id and updated.stored.version == 2
    with repo.unit() as unit:
        [deleted] = unit.conditional_delete("Patient", "identifier=urn:mrn|Q1")
        assert deleted.status == "deleted" and unit.find("Patient", "identifier=urn:mrn|Q1") == []
