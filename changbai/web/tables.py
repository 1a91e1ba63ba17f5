"""The console's own table, in the platform database beside the FHIR store (the web module owns it).

``web_session``: one row per console session (signing in, or signed in). The browser's cookie holds a
random 256-bit secret; the row is found by a SHA-256 digest of it and its tokens are sealed with a key
derived from it, so a copy of the database alone neither names a live cookie nor yields a usable token.
Created by the store's migrations (revision 0009_web_session).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table

from changbai.store.schema import metadata

web_session = Table(
    "web_session",
    metadata,
    Column("digest", String(64), primary_key=True),  # sha256 of the cookie's secret (domain-separated)
    Column("username", String(200), nullable=False),  # "" while signing in
    Column("role", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),  # ms since the epoch
    Column("last_used", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),  # min(last use + idle limit, created + longest life)
    Column("sealed", LargeBinary, nullable=False),  # AES-GCM: nonce + JSON (tokens, CSRF token, sign-in state)
    Index("ix_web_session_expires", "expires"),
    Index("ix_web_session_username", "username"),
)
