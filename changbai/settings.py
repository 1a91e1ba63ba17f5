"""The one settings object: every knob is a CHANGBAI_* environment variable (or a CLI flag that sets it)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHANGBAI_", extra="ignore")

    #: Where the platform keeps its files (SQLite database, keys, inbox) unless told otherwise.
    data_dir: Path = Path("var")
    #: SQLAlchemy-style URL; empty means an SQLite file in data_dir.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    #: The public base URL of the FHIR endpoint; derived from the request when empty.
    base_url: str = ""
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Default and largest page size of searches and histories.
    default_page_size: int = 20
    max_page_size: int = 1000
    log_level: str = "INFO"
    log_json: bool = True
    #: Port of the HL7 v2 MLLP listener started by `changbai serve` (0 = off).
    mllp_port: int = 2575
    #: Honour MSH-15/16 (enhanced acknowledgement mode: CA/CR accept ACKs, none for NE). Off: every message
    #: gets its application ACK, for senders that fill MSH-15/16 but wait for original-mode answers.
    mllp_enhanced_ack: bool = True
    #: Most codes ValueSet/$expand returns without paging (count/offset); a bigger expansion is answered with
    #: a too-costly OperationOutcome rather than truncated.
    terminology_expansion_limit: int = 10_000
    #: Identifier system of the resident ID number (居民身份证号码) in the master patient index.
    resident_id_system: str = "urn:oid:2.16.156.10011.1.3"
    #: Sign-in, access policies, consent and audit (docs/security.md). On by default; CHANGBAI_SECURITY=off
    #: only for tests and benchmarks that exercise the platform's core without it.
    security: bool = True
    #: Requests per minute that one address may make to the token endpoint before a 429.
    token_rate_per_minute: int = 60
    #: Federation (docs/federation.md): this node's id (empty = not federated), tier, GB/T 2260 region,
    #: parent FHIR base URL, and the upward policy. A child authenticates to its parent with SMART Backend
    #: Services (node_auth "smart"; "none" only for a parent with security off): client id (default: the
    #: node id), private key file (default data_dir/keys/node-client.json) and the scope it asks for.
    node_id: str = ""
    node_tier: str = "county"
    node_region: str = ""
    parent_url: str = ""
    node_auth: str = "smart"
    node_client_id: str = ""
    node_key_file: str = ""
    node_scope: str = "system/*.cud"
    federation_policy: str = "whole-record"
    federation_poll_seconds: float = 0.2
    #: How batches travel upward: ``http`` (post to the parent's $replicate) or ``jetstream`` (publish to a
    #: NATS JetStream stream that the parent consumes; for many nodes). The NATS server, the stream that
    #: carries the batches (shared by the nodes of one federation) and how long a parent may take to apply
    #: and acknowledge one batch before JetStream hands it out again.
    federation_transport: str = "http"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = "CHANGBAI_FEDERATION"
    nats_ack_wait_seconds: float = 60.0
    #: Subscriptions: first retry delay, largest backoff, and how long a notification is retried before
    #: it goes to the dead-letter list (must outlast a receiver's outage).
    subscription_retry_seconds: float = 1.0
    subscription_max_backoff_seconds: float = 60.0
    subscription_give_up_seconds: float = 3 * 86400.0
    #: Hosts that rest-hook notifications may go to (comma-separated; "*" = any). Closed networks list
    #: their receivers here; a Subscription naming another host is stored but not served.
    subscription_hosts: str = "127.0.0.1,localhost,::1"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'changbai.db').resolve()}"


def normalise_database_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def override(**values: object) -> Settings:
    """Set values as environment variables (so child processes inherit them) and rebuild settings."""
    for key, value in values.items():
        if value is not None:
            os.environ[f"CHANGBAI_{key.upper()}"] = str(value)
    get_settings.cache_clear()
    return get_settings()
