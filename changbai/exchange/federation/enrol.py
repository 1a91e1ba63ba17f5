"""Enrolling a child node at its parent: the child's client (its id and public JWK set) becomes an
account of the parent's security module with role ``node`` — data in the parent's database, changed by
its operator, not code. ``changbai federation key`` prints the child's public keys;
``changbai federation children add`` registers them at the parent."""

from __future__ import annotations

from typing import Any

from changbai.errors import InvalidInput
from changbai.exchange.federation.credentials import NODE_ROLE
from changbai.store.database import Database


def check_jwks(jwks: Any) -> dict[str, Any]:
    """A public JWK set the parent can verify assertions with (EC P-384 or RSA, no private parts)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise InvalidInput("The node's JWK set must be a JSON object with a non-empty 'keys' list")
    for i, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict) or key.get("kty") not in ("EC", "RSA"):
            raise InvalidInput(f"JWK set key {i}: kty must be EC (P-384, ES384) or RSA (RS384)")
        if "d" in key:
            raise InvalidInput(f"JWK set key {i} holds a private key; register only the public part")
    return jwks


def register_child(
    db: Database, node_id: str, jwks: Any, *, scopes: str | None = None, region: str | None = None
) -> None:
    """Register a child node's client at this (parent) node. Its client id is the child's node id."""
    from changbai.security.accounts import add_account
    from changbai.security.policy import load_policy

    add_account(
        db,
        load_policy(),
        node_id,
        NODE_ROLE,
        kind="client",
        jwks=check_jwks(jwks),
        scopes=scopes,
        region=region,
        display=f"Child node {node_id}",
    )


def children(db: Database) -> list[dict[str, Any]]:
    """The node clients registered here (id, region, active)."""
    from changbai.security.accounts import list_accounts

    return [
        {"node": a["username"], "region": a["region"], "active": bool(a["active"]), "scopes": a["scopes"]}
        for a in list_accounts(db)
        if a["kind"] == "client" and a["role"] == NODE_ROLE
    ]
