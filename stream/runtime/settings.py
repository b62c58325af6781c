"""Worker settings: every TUSK_* variable read through its declaration (stream/runtime/variables.py).

Read once per command (the worker builds its Faust app from them: stream/runtime/worker.py), validated
with one readable sentence per problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from processors.ingest.identifiers import IdentityRules
from stream.kafka import security as kafka_security
from stream.runtime import variables as var
from stream.runtime.variables import Env, SettingsError

__all__ = ["Settings", "SettingsError", "TopicName", "Topics", "retention_env"]


RETENTION_SETTINGS = {"touchpoints": "TUSK_TOUCHPOINTS_RETENTION", "dlq": "TUSK_DLQ_RETENTION",
                      "internal": "TUSK_INTERNAL_RETENTION", "changes": "TUSK_CHANGES_RETENTION",
                      "activations": "TUSK_ACTIVATIONS_RETENTION", "privacy": "TUSK_PRIVACY_RETENTION"}


def retention_env(env: Env | None = None) -> dict[str, int]:
    """The TUSK_*_RETENTION settings given, by topic kind (defaults: stream/kafka/topic_configs.py)."""
    out = {}
    for kind, name in RETENTION_SETTINGS.items():
        value = var.optional_duration(name, 1000, env)
        if value is not None:
            out[kind] = value
    return out


class TopicName:
    """A topic name: the deployment's prefix (TUSK_TOPIC_PREFIX) and this fixed name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, topics: None, owner: type) -> TopicName: ...
    @overload
    def __get__(self, topics: Topics, owner: type | None = None) -> str: ...

    def __get__(self, topics: Topics | None, owner: type | None = None) -> str | TopicName:
        return self if topics is None else topics.prefix + self.name


@dataclass(frozen=True)
class Topics:
    prefix: str

    touchpoints = TopicName("touchpoints")
    dlq = TopicName("dlq")
    segments = TopicName("segments")
    profile_changes = TopicName("profile-changes")
    privacy = TopicName("privacy")
    privacy_results = TopicName("privacy-results")
    routed = TopicName("internal.events")
    """internal: validated events keyed by their routing identifier"""

    def activations(self, channel: str) -> str:
        return f"{self.prefix}activations.{channel}"


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:19092"
    app_id: str = "tusk"
    topic_prefix: str = "tusk."
    partitions: int = 8
    replication: int = 1
    datadir: Path = Path(".tusk/worker")
    web_host: str = "127.0.0.1"
    advertised_host: str = "127.0.0.1"
    web_port: int = 6066
    max_event_bytes: int = 32 * 1024
    dedup_window_ms: int = 24 * 3_600_000
    dedup_max_ids: int = 1000
    recent_events: int = 20
    block_cache_mb: int = 32
    write_buffer_mb: int = 2
    memtables_mb: int = 32
    session_timeout_ms: int = 10_000
    standby_replicas: int = 0
    producer_linger_ms: int = 10
    output_linger_ms: int = 2
    fetch_min_bytes: int = 65536
    fetch_wait_ms: int = 10
    fetch_wait_busy_ms: int = 30
    fetch_idle_wait_ms: int = 100
    bulk_restore_ms: int = 120_000
    """time a rebalance may spend restoring new partitions in bulk (the rebalance timeout follows)"""
    log_level: str = "warn"
    identity_config: Path | None = None
    retention_ms: int = 105 * 7 * 86_400_000
    profile_ttl_ms: int | None = None
    erase_within_ms: int = 7 * 86_400_000
    """TUSK_ERASE_WITHIN: the broker's copies of erased data are gone within this
    (stream/kafka/topic_configs.py)"""
    topic_retention_ms: dict[str, int] = field(default_factory=dict)
    """TUSK_<KIND>_RETENTION as given, by topic kind (defaults: topic_configs.RETENTION_DEFAULTS)"""
    activation_config: Path | None = None
    clock: str = "wall"
    """wall: segments judge time by the wall clock; event: by the event-time watermark (replays)"""
    tick_interval_ms: int = 2000
    backfill_batch: int = 50
    """profiles rechecked per backfill or tick record: 500 held the event loop 1.1-1.6 s per
    record on a CDNOW backlog (deadlines firing on the event clock), delivery reports, timers
    and HTTP waiting behind it"""
    state_cache_mb: int = 16
    """clean table values kept in memory (stream/state/writeback.py), by their encoded size"""
    flush_records: int = 1000
    flush_interval_ms: int = 100
    """dirty state is written (RocksDB batch + changelog) every flush_records records or this often"""
    kafka_extra: dict[str, str] = field(default_factory=dict)
    """librdkafka properties from TUSK_KAFKA_* (stream/kafka/security.py)"""
    predict_config: Path | None = None
    """predict.yaml: purchase/refund events and values, CLV discount rate (schemas/predict.schema.json)"""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def identity_rules(self) -> IdentityRules:
        """The identity.yaml rules (priority, blocked values, phone region), or the defaults."""
        if self.identity_config is None:
            return IdentityRules()
        from processors.identity.graph import load_identity_config

        return load_identity_config(self.identity_config, self.partitions).rules

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{h}" for h in self.bootstrap.split(","))

    @classmethod
    def from_env(cls, env: Env | None = None) -> Settings:
        """The settings of `env` (default: this process's environment; the CLI passes its flags
        over it, stream/variables.with_flags), every variable read through its declaration."""
        bootstrap = var.given("TUSK_BOOTSTRAP_SERVERS", env) or var.text("KAFKA_BOOTSTRAP_SERVERS", env)
        web_port = var.integer("TUSK_WEB_PORT", 1, env)
        prefix = var.text("TUSK_TOPIC_PREFIX", env)
        if not re.fullmatch(r"[A-Za-z0-9._-]*", prefix):
            raise SettingsError(f"TUSK_TOPIC_PREFIX={prefix!r}: only letters, digits, '.', '_' and '-'.")
        extra = kafka_security.client_config(env)  # the one parser of TUSK_KAFKA_* (every client)
        try:
            kafka_security.check(extra)
        except kafka_security.KafkaSecurityError as e:
            raise SettingsError(str(e)) from None
        web_host = var.text("TUSK_WEB_HOST", env)
        return cls(
            bootstrap=bootstrap,
            app_id=var.text("TUSK_APP_ID", env),
            topic_prefix=prefix,
            partitions=var.integer("TUSK_PARTITIONS", 1, env),
            replication=var.integer("TUSK_REPLICATION", 1, env),
            datadir=Path(var.text("TUSK_DATADIR", env, default=f".tusk/worker-{web_port}")),
            web_host=web_host,
            advertised_host=var.text("TUSK_WEB_ADVERTISED_HOST", env, default=web_host),
            web_port=web_port,
            max_event_bytes=var.integer("TUSK_MAX_EVENT_BYTES", 64, env),
            dedup_window_ms=var.duration("TUSK_DEDUP_WINDOW", 0, env),
            dedup_max_ids=var.integer("TUSK_DEDUP_MAX_IDS", 1, env),
            recent_events=var.integer("TUSK_RECENT_EVENTS", 0, env),
            block_cache_mb=var.integer("TUSK_BLOCK_CACHE_MB", 1, env),
            write_buffer_mb=var.integer("TUSK_WRITE_BUFFER_MB", 1, env),
            memtables_mb=var.integer("TUSK_MEMTABLES_MB", 1, env),
            session_timeout_ms=var.duration("TUSK_SESSION_TIMEOUT", 0, env),
            standby_replicas=var.integer("TUSK_STANDBY_REPLICAS", 0, env),
            producer_linger_ms=var.integer("TUSK_PRODUCER_LINGER_MS", 0, env),
            output_linger_ms=var.integer("TUSK_OUTPUT_LINGER_MS", 0, env),
            fetch_min_bytes=var.integer("TUSK_FETCH_MIN_BYTES", 1, env),
            fetch_wait_ms=var.integer("TUSK_FETCH_WAIT_MS", 1, env),
            fetch_wait_busy_ms=var.integer("TUSK_FETCH_WAIT_BUSY_MS", 1, env),
            fetch_idle_wait_ms=var.integer("TUSK_FETCH_IDLE_WAIT_MS", 1, env),
            bulk_restore_ms=var.duration("TUSK_BULK_RESTORE", 0, env),
            log_level=var.text("TUSK_LOG_LEVEL", env),
            identity_config=var.optional_path("TUSK_IDENTITY_CONFIG", env),
            retention_ms=var.duration("TUSK_RETENTION", 0, env),
            profile_ttl_ms=var.optional_duration("TUSK_PROFILE_TTL", 0, env),
            erase_within_ms=var.duration("TUSK_ERASE_WITHIN", 1000, env),
            topic_retention_ms=retention_env(env),
            activation_config=var.optional_path("TUSK_ACTIVATION_CONFIG", env),
            clock=var.choice("TUSK_CLOCK", ("wall", "event"), env),
            tick_interval_ms=var.duration("TUSK_TICK_INTERVAL", 0, env),
            backfill_batch=var.integer("TUSK_BACKFILL_BATCH", 1, env),
            state_cache_mb=var.integer("TUSK_STATE_CACHE_MB", 0, env),
            flush_records=var.integer("TUSK_FLUSH_RECORDS", 1, env),
            flush_interval_ms=var.duration("TUSK_FLUSH_INTERVAL", 0, env),
            kafka_extra=extra,
            predict_config=var.optional_path("TUSK_PREDICT_CONFIG", env),
        )

