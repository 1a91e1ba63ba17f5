"""Keys kept on the node's disk (data_dir/keys/), never in the database: whoever copies the database
alone can neither mint tokens, nor read protected fields, nor rewrite the audit chain.

- ``signing-<kid>.json``: EC P-384 private JWKs for access tokens (ES384); ``current`` names the one
  in use. Rotation adds a key and keeps the previous ones for verification until their tokens expire.
- ``fields.key``: 64 random bytes: AES-256-GCM key for protected fields, then the HMAC key of the
  blind index.
- ``audit.key``: 32 random bytes: HMAC key of the audit chain.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeySet

from changbai import logs

log = logs.get(__name__)

#: How many signing keys the JWKS keeps (the current one and the ones before it).
KEEP_SIGNING_KEYS = 3


class KeyStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._signing: dict[str, ECKey] = {}
        self._current = ""
        self.field_key = b""
        self.audit_key = b""
        self.load()

    def load(self) -> None:
        """Read the keys, creating any that are missing (first start)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.field_key = self._secret("fields.key", 64)
        self.audit_key = self._secret("audit.key", 32)
        self._signing = {}
        for path in sorted(self.dir.glob("signing-*.json")):
            key = ECKey.import_key(json.loads(path.read_text()))
            self._signing[key.kid or path.stem[8:]] = key
        current = self.dir / "current"
        self._current = current.read_text().strip() if current.exists() else ""
        if self._current not in self._signing:
            self.rotate()

    def _secret(self, name: str, size: int) -> bytes:
        path = self.dir / name
        if not path.exists():
            _write_private(path, secrets.token_bytes(size).hex())
            logs.event(log, "key created", file=str(path))
        return bytes.fromhex(path.read_text().strip())

    def rotate(self) -> str:
        """Make a new signing key current; keep the last few for verifying tokens already issued."""
        key = ECKey.generate_key("P-384", private=True, auto_kid=True)
        kid = key.kid or secrets.token_hex(8)
        _write_private(self.dir / f"signing-{kid}.json", json.dumps(key.as_dict(private=True)))
        _write_private(self.dir / "current", kid)
        self._signing[kid] = key
        self._current = kid
        files = sorted(self.dir.glob("signing-*.json"), key=lambda p: p.stat().st_mtime_ns)
        for old in files[:-KEEP_SIGNING_KEYS]:
            self._signing.pop(old.stem[8:], None)
            old.unlink()
        logs.event(log, "signing key rotated", kid=kid)
        return kid

    @property
    def signing_key(self) -> ECKey:
        return self._signing[self._current]

    def verification_keys(self) -> KeySet:
        return KeySet(list(self._signing.values()))

    def jwks(self) -> dict[str, Any]:
        keys = []
        for key in self._signing.values():
            public = key.as_dict(private=False)
            public.update({"use": "sig", "alg": "ES384"})
            keys.append(public)
        return {"keys": keys}


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
