"""The security module's own tables, on the store's metadata (same database, its own ``sec_`` names).

- ``sec_account``: people and systems that sign in. People have an Argon2 password hash; systems
  (SMART Backend Services clients) have a public JWK set. Each has a role (see data/roles.json) and the
  facility, practitioner, resident or region it acts for. Failed sign-ins lock an account for a while.
- ``sec_grant``: authorisation codes and refresh tokens (stored as SHA-256 digests, never in clear);
  refresh tokens rotate and a reused one revokes its whole family.
- ``sec_jti``: client-assertion ids seen, until they expire (replay protection); revoked access tokens.
- ``sec_break_glass``: emergency accesses (who, which resident, why, until when, reviewed or not).
- ``sec_break_glass_review``: the outcome of each emergency access's review (justified or not, why, by
  whom, when); an access without a row here is open for review.
- ``sec_treatment``: which facility has treated which resident (written with the record), the basis of the
  default rule that the facilities treating a resident read the resident's whole record.
- ``sec_audit``: the audit trail, append-only, each row chained to the previous by a keyed hash.
- ``sec_audit_patient``: which audit rows name which resident, written with each row: the index behind
  "who read my record" (``AuditEvent?patient=``), so that it does not scan the whole trail.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from changbai.store.schema import BigId, metadata

account = Table(
    "sec_account",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("kind", String(8), nullable=False),  # user | client
    Column("role", String(40), nullable=False),
    Column("display", String(200), nullable=False, default=""),
    Column("password_hash", String(200), nullable=True),
    Column("jwks", Text, nullable=True),  # public keys of a system client (JSON)
    Column("redirect_uris", Text, nullable=True),  # JSON list, for authorisation-code clients
    Column("scopes", Text, nullable=True),  # scopes this account may ask for (blank: the role's)
    Column("organization", String(64), nullable=True),  # facility (Organization id)
    Column("practitioner", String(64), nullable=True),
    Column("patient", String(64), nullable=True),  # a resident's own Patient id
    Column("region", String(12), nullable=True),  # GB/T 2260 code of an officer's area
    Column("failures", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=False, default=0),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
)

grant = Table(
    "sec_grant",
    metadata,
    Column("digest", String(64), primary_key=True),  # sha-256 of the code / refresh token
    Column("kind", String(8), nullable=False),  # code | refresh
    Column("username", String(100), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("scope", Text, nullable=False),
    Column("redirect_uri", Text, nullable=True),
    Column("challenge", String(128), nullable=True),  # PKCE S256 code challenge
    Column("family", String(64), nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    Index("ix_sec_grant_family", "family"),
)

jti = Table(
    "sec_jti",
    metadata,
    Column("jti", String(200), primary_key=True),  # "assertion:<client>:<jti>" or "revoked:<jti>"
    Column("expires", BigInteger, nullable=False),
)

break_glass = Table(
    "sec_break_glass",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(100), nullable=False),
    Column("patient", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("started", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("reviewed", Boolean, nullable=False, default=False),
    Index("ix_sec_break_glass_user", "username", "expires"),
)

break_glass_review = Table(
    "sec_break_glass_review",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # sec_break_glass.id
    Column("outcome", String(16), nullable=False),  # justified | not-justified
    Column("comment", Text, nullable=False),
    Column("reviewer", String(100), nullable=False),
    Column("reviewed_at", BigInteger, nullable=False),
)

treatment = Table(
    "sec_treatment",
    metadata,
    Column("organization", String(64), primary_key=True),
    Column("patient", String(64), primary_key=True),
    Column("since", BigInteger, nullable=False),
)

audit = Table(
    "sec_audit",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("recorded", BigInteger, nullable=False),  # epoch ms
    Column("category", String(16), nullable=False),  # rest | login | denial | break-glass | admin
    Column("action", String(1), nullable=False),  # C R U D E (BALP / AuditEvent.action)
    Column("outcome", String(2), nullable=False),  # 0 success, 4 minor failure, 8 serious failure
    Column("username", String(100), nullable=False, default=""),
    Column("role", String(40), nullable=False, default=""),
    Column("organization", String(64), nullable=False, default=""),
    Column("address", String(64), nullable=False, default=""),
    Column("purpose", String(40), nullable=False, default=""),
    Column("patients", Text, nullable=False, default=""),  # space-separated Patient ids
    Column("entities", Text, nullable=False, default=""),  # space-separated Type/id of what was touched
    Column("query", Text, nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Column("flagged", Boolean, nullable=False, default=False),  # break-the-glass: to be reviewed
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_sec_audit_recorded", "recorded"),
    Index("ix_sec_audit_user", "username", "recorded"),
)

audit_patient = Table(
    "sec_audit_patient",
    metadata,
    Column("patient", String(64), primary_key=True),
    Column("seq", BigId, primary_key=True),
)
