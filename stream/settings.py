"""Worker settings: defaults in code, overridden by TUSK_* environment variables.

Read once per process (the Faust app is built from them at import), validated
with one readable sentence per problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from processors import timeutil
from processors.errors import TuskError
from processors.identifiers import IdentityRules
from stream import kafka_security


class SettingsError(TuskError, ValueError):
    """A setting with a value Tusk cannot use: one sentence naming it."""


def parse_duration_ms(text: str, name: str = "duration") -> int:
    try:
        return timeutil.parse_duration_ms(text, name)
    except ValueError as e:
        raise SettingsError(str(e)) from None


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def int_env(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number.") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: expected at least {minimum}.")
    return value


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name, default)
    if value not in allowed:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(allowed)}.")
    return value


RETENTION_SETTINGS = {"touchpoints": "TUSK_TOUCHPOINTS_RETENTION", "dlq": "TUSK_DLQ_RETENTION",
                      "internal": "TUSK_INTERNAL_RETENTION", "changes": "TUSK_CHANGES_RETENTION",
                      "activations": "TUSK_ACTIVATIONS_RETENTION", "privacy": "TUSK_PRIVACY_RETENTION"}


def retention_env() -> dict[str, int]:
    """The TUSK_*_RETENTION settings given, by topic kind (defaults: stream/topic_configs.py)."""
    out = {}
    for kind, name in RETENTION_SETTINGS.items():
        if os.environ.get(name):
            out[kind] = duration_at_least(name, os.environ[name], 1000)
    return out


def duration_at_least(name: str, default: str, minimum_ms: int) -> int:
    raw = _env(name, default)
    value = parse_duration_ms(raw, name)
    if value < minimum_ms:
        raise SettingsError(f"{name}={raw!r}: expected at least {minimum_ms} ms.")
    return value


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def touchpoints(self) -> str:
        return f"{self.prefix}touchpoints"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def segments(self) -> str:
        return f"{self.prefix}segments"

    @property
    def profile_changes(self) -> str:
        return f"{self.prefix}profile-changes"

    @property
    def privacy(self) -> str:
        return f"{self.prefix}privacy"

    @property
    def privacy_results(self) -> str:
        return f"{self.prefix}privacy-results"

    @property
    def routed(self) -> str:
        """Internal: validated events keyed by their routing identifier."""
        return f"{self.prefix}internal.events"

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
    block_cache_mb: int = 4
    write_buffer_mb: int = 2
    session_timeout_ms: int = 10_000
    standby_replicas: int = 0
    producer_linger_ms: int = 10
    bulk_restore_ms: int = 120_000
    """time a rebalance may spend restoring new partitions in bulk (the rebalance timeout follows)"""
    log_level: str = "warn"
    identity_config: Path | None = None
    retention_ms: int = 105 * 7 * 86_400_000
    profile_ttl_ms: int | None = None
    erase_within_ms: int = 7 * 86_400_000
    """TUSK_ERASE_WITHIN: the broker's copies of erased data are gone within this (stream/topic_configs.py)"""
    topic_retention_ms: dict[str, int] = field(default_factory=dict)
    """TUSK_<KIND>_RETENTION as given, by topic kind (defaults: topic_configs.RETENTION_DEFAULTS)"""
    activation_config: Path | None = None
    clock: str = "wall"
    """wall: segments judge time by the wall clock; event: by the event-time watermark (replays)"""
    tick_interval_ms: int = 2000
    backfill_batch: int = 500
    state_cache_mb: int = 32
    """clean table values kept in memory (stream/state.py), by their encoded size"""
    flush_records: int = 1000
    flush_interval_ms: int = 20
    """dirty state is written (RocksDB batch + changelog) every flush_records records or this often"""
    kafka_extra: dict[str, str] = field(default_factory=dict)
    """librdkafka properties from TUSK_KAFKA_* (stream/kafka_security.py)"""
    predict_config: Path | None = None
    """predict.yaml: purchase/refund events and values, CLV discount rate (schemas/predict.schema.json)"""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def identity_rules(self) -> IdentityRules:
        """The identity.yaml rules (priority, blocked values, phone region), or the defaults."""
        if self.identity_config is None:
            return IdentityRules()
        from processors.identity import load_identity_config

        return load_identity_config(self.identity_config, self.partitions).rules

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{h}" for h in self.bootstrap.split(","))

    @classmethod
    def from_env(cls) -> Settings:
        bootstrap = os.environ.get("TUSK_BOOTSTRAP_SERVERS") or os.environ.get(
            "KAFKA_BOOTSTRAP_SERVERS", cls.bootstrap)
        web_port = int_env("TUSK_WEB_PORT", cls.web_port, 1)
        prefix = _env("TUSK_TOPIC_PREFIX", cls.topic_prefix)
        if not re.fullmatch(r"[A-Za-z0-9._-]*", prefix):
            raise SettingsError(f"TUSK_TOPIC_PREFIX={prefix!r}: only letters, digits, '.', '_' and '-'.")
        extra = kafka_security.client_config()  # the one parser of TUSK_KAFKA_* (every client)
        try:
            kafka_security.check(extra)
        except kafka_security.KafkaSecurityError as e:
            raise SettingsError(str(e)) from None
        return cls(
            bootstrap=bootstrap,
            app_id=_env("TUSK_APP_ID", cls.app_id),
            topic_prefix=prefix,
            partitions=int_env("TUSK_PARTITIONS", cls.partitions, 1),
            replication=int_env("TUSK_REPLICATION", cls.replication, 1),
            datadir=Path(_env("TUSK_DATADIR", f".tusk/worker-{web_port}")),
            web_host=_env("TUSK_WEB_HOST", cls.web_host),
            advertised_host=_env("TUSK_WEB_ADVERTISED_HOST",
                                 _env("TUSK_WEB_HOST", cls.web_host)),
            web_port=web_port,
            max_event_bytes=int_env("TUSK_MAX_EVENT_BYTES", cls.max_event_bytes, 64),
            dedup_window_ms=parse_duration_ms(_env("TUSK_DEDUP_WINDOW", "24h"), "TUSK_DEDUP_WINDOW"),
            dedup_max_ids=int_env("TUSK_DEDUP_MAX_IDS", cls.dedup_max_ids, 1),
            recent_events=int_env("TUSK_RECENT_EVENTS", cls.recent_events, 0),
            block_cache_mb=int_env("TUSK_BLOCK_CACHE_MB", cls.block_cache_mb, 1),
            write_buffer_mb=int_env("TUSK_WRITE_BUFFER_MB", cls.write_buffer_mb, 1),
            session_timeout_ms=parse_duration_ms(_env("TUSK_SESSION_TIMEOUT", "10s"), "TUSK_SESSION_TIMEOUT"),
            standby_replicas=int_env("TUSK_STANDBY_REPLICAS", cls.standby_replicas, 0),
            producer_linger_ms=int_env("TUSK_PRODUCER_LINGER_MS", cls.producer_linger_ms, 0),
            bulk_restore_ms=parse_duration_ms(_env("TUSK_BULK_RESTORE", "120s"), "TUSK_BULK_RESTORE"),
            log_level=_env("TUSK_LOG_LEVEL", cls.log_level),
            identity_config=Path(os.environ["TUSK_IDENTITY_CONFIG"])
            if os.environ.get("TUSK_IDENTITY_CONFIG") else None,
            retention_ms=parse_duration_ms(_env("TUSK_RETENTION", "105w"), "TUSK_RETENTION"),
            profile_ttl_ms=parse_duration_ms(os.environ["TUSK_PROFILE_TTL"], "TUSK_PROFILE_TTL")
            if os.environ.get("TUSK_PROFILE_TTL") else None,
            erase_within_ms=duration_at_least("TUSK_ERASE_WITHIN", "7d", 1000),
            topic_retention_ms=retention_env(),
            activation_config=Path(os.environ["TUSK_ACTIVATION_CONFIG"])
            if os.environ.get("TUSK_ACTIVATION_CONFIG") else None,
            clock=_choice("TUSK_CLOCK", cls.clock, ("wall", "event")),
            tick_interval_ms=parse_duration_ms(_env("TUSK_TICK_INTERVAL", "2s"), "TUSK_TICK_INTERVAL"),
            backfill_batch=int_env("TUSK_BACKFILL_BATCH", cls.backfill_batch, 1),
            state_cache_mb=int_env("TUSK_STATE_CACHE_MB", cls.state_cache_mb, 0),
            flush_records=int_env("TUSK_FLUSH_RECORDS", cls.flush_records, 1),
            flush_interval_ms=parse_duration_ms(_env("TUSK_FLUSH_INTERVAL", "20ms"), "TUSK_FLUSH_INTERVAL"),
            kafka_extra=extra,
            predict_config=Path(os.environ["TUSK_PREDICT_CONFIG"])
            if os.environ.get("TUSK_PREDICT_CONFIG") else None,
        )

