"""Enrolling a child node, as its operators do it from the command line: the child prints its public keys
(`changbai federation key`), the parent registers them (`changbai federation children add`); bad key
files are clear errors that change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changbai.cli import main
from changbai.settings import get_settings


@pytest.fixture
def node_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHANGBAI_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("CHANGBAI_DATA_DIR", str(tmp_path / "child"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_child_key_registered_at_the_parent(node_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jwks_file = node_env / "county.jwks.json"
    assert main(["federation", "key", "--out", str(jwks_file)]) == 0
    jwks = json.loads(jwks_file.read_text())
    assert [k["kty"] for k in jwks["keys"]] == ["EC"] and "d" not in jwks["keys"][0]
    private = node_env / "child" / "keys" / "node-client.json"
    assert private.stat().st_mode & 0o077 == 0  # only the node's own user reads its private key
    # The same key on every call (the parent's registration stays valid).
    assert main(["federation", "key"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1]) == jwks

    parent = f"sqlite:///{node_env / 'parent.db'}"
    assert main(["federation", "--database", parent, "children", "add", "nongan-county", "--jwks", str(jwks_file)]) == 0
    assert main(["federation", "--database", parent, "children", "list"]) == 0
    assert "nongan-county" in capsys.readouterr().out
    # Registering twice, or a private key, or a file that is not a JWK set: a clear error, nothing changed.
    assert main(["federation", "--database", parent, "children", "add", "nongan-county", "--jwks", str(jwks_file)]) == 2
    leaked = node_env / "private.json"
    leaked.write_text(json.dumps({"keys": [json.loads(private.read_text())]}))
    assert main(["federation", "--database", parent, "children", "add", "other", "--jwks", str(leaked)]) == 2
    (node_env / "junk.json").write_text("not json")
    assert (
        main(["federation", "--database", parent, "children", "add", "other", "--jwks", str(node_env / "junk.json")])
        == 2
    )
    err = capsys.readouterr().err
    assert "exists already" in err and "private key" in err and "Cannot read the JWK set" in err
    assert main(["federation", "--database", parent, "children", "list"]) == 0
    assert "other" not in capsys.readouterr().out
