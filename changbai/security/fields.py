"""Protected fields: resident ID numbers and phone numbers, encrypted at rest, found by exact value
through a keyed blind index, masked for readers who do not need them in full.

The store indexes whatever a resource holds, so protection happens before it sees the value (a
``prepare`` step): the identifier's (or telecom's) ``value`` becomes a blind-index token
``bidx:<HMAC-SHA256(key, kind|value)>`` — exactly what the token index then holds — and the ciphertext
(AES-256-GCM) rides in an extension beside it. A search for ``identifier=<system>|<number>`` or
``phone=<number>`` is rewritten to the token before it runs (a ``search`` step). On the way out (a
``read`` step) the value is decrypted, then shown in full or masked by the reader's role. The nonce is
derived from the value (HMAC), so writing the same value twice stores the same bytes: an unchanged
resource stays unchanged, and equality is all the ciphertext reveals — no more than the blind index.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

EXT_CIPHER = "https://changbai.example/fhir/StructureDefinition/protected-value"
TOKEN_PREFIX = "bidx:"


class FieldProtector:
    def __init__(self, key: bytes, resident_id_system: str) -> None:
        self._aes = AESGCM(key[:32])
        self._mac = key[32:64]
        self.id_system = resident_id_system

    # ------------------------------------------------------------------------------------ primitives
    def token(self, kind: str, value: str) -> str:
        digest = hmac.new(self._mac, f"{kind}|{normalise(kind, value)}".encode(), hashlib.sha256).hexdigest()
        return TOKEN_PREFIX + digest[:40]

    def encrypt(self, kind: str, value: str) -> str:
        nonce = hmac.new(self._mac, f"nonce|{kind}|{value}".encode(), hashlib.sha256).digest()[:12]
        return base64.b64encode(nonce + self._aes.encrypt(nonce, value.encode(), kind.encode())).decode()

    def decrypt(self, kind: str, blob: str) -> str | None:
        try:
            raw = base64.b64decode(blob)
            return self._aes.decrypt(raw[:12], raw[12:], kind.encode()).decode()
        except Exception:  # a tampered or foreign value reads as absent, never as a crash
            return None

    # ------------------------------------------------------------------------------------- resources
    def _fields(self, resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for ident in resource.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("system") == self.id_system:
                out.append(("id", ident))
        for tel in resource.get("telecom") or []:
            if isinstance(tel, dict) and tel.get("system") == "phone":
                out.append(("phone", tel))
        return out

    def protect(self, resource: dict[str, Any], previous: dict[str, Any] | None = None) -> None:
        """Replace protected values by blind-index token + ciphertext. The changed elements are copies, so
        the caller's nested objects are never altered (already-protected values are kept as they are). A
        masked value sent back unchanged by a reader who saw the mask keeps the stored value."""
        masked = self._masks(previous) if previous is not None else {}
        for key, kind_of in (("identifier", self._id_kind), ("telecom", _phone_kind)):
            elements = resource.get(key)
            if not isinstance(elements, list):
                continue
            out = []
            for element in elements:
                kind = kind_of(element)
                value = element.get("value") if kind else None
                if kind is None or not isinstance(value, str) or value.startswith(TOKEN_PREFIX):
                    out.append(element)
                    continue
                if "*" in value and (kind, value) in masked:
                    out.append(masked[(kind, value)])
                    continue
                exts = [e for e in element.get("extension") or [] if not _is_cipher(e)]
                exts.append({"url": EXT_CIPHER, "valueString": self.encrypt(kind, value)})
                out.append({**element, "extension": exts, "value": self.token(kind, value)})
            resource[key] = out

    def _masks(self, previous: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for kind, element in self._fields(previous):
            blob = next((e.get("valueString") for e in element.get("extension") or [] if _is_cipher(e)), None)
            clear = self.decrypt(kind, blob) if blob else None
            if clear is not None:
                out[(kind, mask(kind, clear))] = element
        return out

    def _id_kind(self, element: Any) -> str | None:
        return "id" if isinstance(element, dict) and element.get("system") == self.id_system else None

    def reveal(self, resource: dict[str, Any], full: bool) -> None:
        """Turn protected values back into clear text (``full``) or a mask, in place."""
        for kind, element in self._fields(resource):
            exts = element.get("extension") or []
            blob = next(
                (e.get("valueString") for e in exts if isinstance(e, dict) and e.get("url") == EXT_CIPHER), None
            )
            if blob is None:
                continue
            clear = self.decrypt(kind, blob)
            rest = [e for e in exts if not (isinstance(e, dict) and e.get("url") == EXT_CIPHER)]
            if rest:
                element["extension"] = rest
            else:
                element.pop("extension", None)
            if clear is None:
                element.pop("value", None)
            else:
                element["value"] = clear if full else mask(kind, clear)

    def revealed(self, resource: dict[str, Any], full: bool = True) -> dict[str, Any]:
        """:meth:`reveal` on a copy, made only when there is something to reveal (most resources hold no
        protected value, and a deep copy costs more than the rest of the audit step)."""
        if not any(_is_cipher(e) for _, element in self._fields(resource) for e in element.get("extension") or []):
            return resource
        shown = {**resource}
        for key in ("identifier", "telecom"):
            if isinstance(shown.get(key), list):
                shown[key] = [dict(e) if isinstance(e, dict) else e for e in shown[key]]
        self.reveal(shown, full)
        return shown

    def search_value(self, kind: str, value: str) -> str:
        """A search value for a protected parameter (``system|value`` or ``value``) as its token form."""
        if kind == "id":
            system, bar, code = value.rpartition("|")
            if bar and system == self.id_system and code:
                return f"{system}|{self.token('id', code)}"
            if not bar and RESIDENT_ID.match(value):
                return f"{value},{self.id_system}|{self.token('id', value)}"
            return value
        system, bar, code = value.rpartition("|")
        if bar and system not in ("", "phone"):
            return value
        return f"{'phone|' if bar and system else ''}{self.token('phone', code if bar else value)}"


def _phone_kind(element: Any) -> str | None:
    return "phone" if isinstance(element, dict) and element.get("system") == "phone" else None


def _is_cipher(ext: Any) -> bool:
    return isinstance(ext, dict) and ext.get("url") == EXT_CIPHER


RESIDENT_ID = re.compile(r"^\d{17}[\dXx]$|^\d{15}$")


def normalise(kind: str, value: str) -> str:
    value = value.strip()
    if kind == "id":
        return value.upper()
    digits = re.sub(r"[\s\-()]", "", value)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    return digits


def mask(kind: str, value: str) -> str:
    """2201**********1234 for an ID number, 138****5678 for a mobile phone."""
    if kind == "id":
        return value[:4] + "*" * max(0, len(value) - 8) + value[-4:] if len(value) > 8 else "*" * len(value)
    if len(value) >= 7:
        return value[:3] + "*" * (len(value) - 7) + value[-4:]
    return "*" * len(value)
