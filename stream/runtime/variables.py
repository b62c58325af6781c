"""Every environment variable Tusk reads, declared once: name, default, who reads it, one line of doc.

`SETTINGS` below is the declaration; code reads a variable only through the functions of this
module (`text`, `integer`, `duration`, ...), which refuse a name that is not declared and take
the default from the declaration. docs/reference/settings.md is generated from it
(`python -m stream.cli.docs`), and tests/unit/test_reference_docs.py checks that every `TUSK_*`
name anywhere in the tree is declared here and that the declared defaults are the real ones.

Every reader takes the environment as a parameter (`env`, default: the process's): the CLI
passes its flags by layering them over the environment (`with_flags`), never by writing
`os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from processors.common import timeutil
from processors.common.errors import TuskError


class SettingsError(TuskError, ValueError):
    """A setting with a value Tusk cannot use: one sentence naming it and what was expected."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    """as a user would write it; "" when unset means off / not used"""
    meaning: str
    used_by: str
    """worker, collector, CLI (the processes that read it)"""
    field: str | None = None
    """`Settings.<field>` or `CollectorConfig.<field>` it fills: the test checks the default"""


ALL = "worker, collector, CLI"
SETTINGS: tuple[Setting, ...] = (
    Setting("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092", "Kafka bootstrap servers (comma separated); "
            "`--bootstrap` on the commands", ALL, "Settings.bootstrap"),
    Setting("TUSK_BOOTSTRAP_SERVERS", "", "the same, when set it wins over `KAFKA_BOOTSTRAP_SERVERS`", ALL),
    Setting("TUSK_KAFKA_<NAME>", "", "a librdkafka client property (`TUSK_KAFKA_SASL_USERNAME` → "
            "`sasl.username`), given to every Kafka client; SASL/TLS ones are mapped onto the worker's "
            "Faust clients: [kafka-security.md](../kafka-security.md)", ALL),
    Setting("TUSK_APP_ID", "tusk", "Faust app id: the workers' consumer group and the prefix of the "
            "table changelog topics", ALL, "Settings.app_id"),
    Setting("TUSK_TOPIC_PREFIX", "tusk.", "prefix of every contract topic (letters, digits, `.`, `_`, `-`)",
            ALL, "Settings.topic_prefix"),
    Setting("TUSK_PARTITIONS", "8", "partitions of the topics Tusk creates; set once per cluster, the "
            "ceiling for worker replicas", ALL, "Settings.partitions"),
    Setting("TUSK_REPLICATION", "1", "replication factor of the topics Tusk creates", ALL,
            "Settings.replication"),
    Setting("TUSK_DATADIR", ".tusk/worker-<web port>", "RocksDB folder of this replica (one per replica)",
            "worker"),
    Setting("TUSK_WEB_HOST", "127.0.0.1", "address the worker's HTTP API listens on", "worker",
            "Settings.web_host"),
    Setting("TUSK_WEB_ADVERTISED_HOST", "the value of TUSK_WEB_HOST", "host other workers use to reach "
            "this one (forwarded lookups)", "worker"),
    Setting("TUSK_WEB_PORT", "6066", "port of the worker's HTTP API", "worker", "Settings.web_port"),
    Setting("TUSK_LOG_LEVEL", "warn", "crit, error, warn, info or debug", "worker, collector",
            "Settings.log_level"),
    Setting("TUSK_MAX_EVENT_BYTES", "32768", "largest accepted event (bytes); larger ones go to the DLQ "
            "(worker) or are refused with 413 (collector)", "worker, collector", "Settings.max_event_bytes"),
    Setting("TUSK_DEDUP_WINDOW", "24h", "how long a profile remembers messageIds to drop duplicates",
            "worker", "Settings.dedup_window_ms"),
    Setting("TUSK_DEDUP_MAX_IDS", "1000", "messageIds remembered per profile at most", "worker",
            "Settings.dedup_max_ids"),
    Setting("TUSK_RECENT_EVENTS", "20", "recent events kept in a profile", "worker",
            "Settings.recent_events"),
    Setting("TUSK_RETENTION", "105w", "occurrence buckets and recent events older than this are dropped "
            "from profiles (105 weeks: year-over-year comparisons)", "worker", "Settings.retention_ms"),
    Setting("TUSK_ERASE_WITHIN", "7d", "the erasure deadline kept by Kafka itself: compacted topics get "
            "segment.ms, max.compaction.lag.ms and delete.retention.ms of an eighth of it, derived topics "
            "a retention of half of it (stream/kafka/topic_configs.py; README, What is gone when)", "worker",
            "Settings.erase_within_ms"),
    Setting("TUSK_TOUCHPOINTS_RETENTION", "30d", "retention.ms of the raw input topic", "worker"),
    *(Setting(f"TUSK_{kind.upper()}_RETENTION", "", f"retention.ms of the {what}; unset: half of "
              "TUSK_ERASE_WITHIN", "worker")
      for kind, what in (("dlq", "DLQ (rejected input, original bytes)"),
                         ("internal", "internal topic (identity-protocol records)"),
                         ("changes", "profile-changes topic"),
                         ("activations", "activation topics (triggers, with addresses)"),
                         ("privacy", "privacy request and result topics"))),
    Setting("TUSK_PROFILE_TTL", "", "unset: off; set (e.g. 730d): a profile without events for that long "
            "is erased like a privacy request", "worker", "Settings.profile_ttl_ms"),
    Setting("TUSK_IDENTITY_CONFIG", "", "identity.yaml (schema identity.schema.json); unset: the defaults",
            "worker"),
    Setting("TUSK_PREDICT_CONFIG", "", "predict.yaml (schema predict.schema.json): purchase and refund "
            "events, their value properties, the CLV discount rate; unset: Segment's Order Completed / "
            "Order Refunded", "worker, CLI"),
    Setting("TUSK_ACTIVATION_CONFIG", "", "activation.yaml (schema activation.schema.json); unset: the "
            "default channels", "worker"),
    Setting("TUSK_CLOCK", "wall", "`wall`: segments judge time by the wall clock; `event`: by the "
            "event-time watermark (replays of history, tests)", "worker", "Settings.clock"),
    Setting("TUSK_TICK_INTERVAL", "2s", "how often time-relative segment conditions are re-checked",
            "worker", "Settings.tick_interval_ms"),
    Setting("TUSK_BACKFILL_BATCH", "500", "profiles re-evaluated per step when a definition changes",
            "worker", "Settings.backfill_batch"),
    Setting("TUSK_STATE_CACHE_MB", "32", "profiles, identities and bookkeeping kept in memory between "
            "writes (MiB, by encoded size; least recently used evicted); 0 keeps only unwritten ones",
            "worker", "Settings.state_cache_mb"),
    Setting("TUSK_FLUSH_RECORDS", "1000", "changed state is written to RocksDB (one batch per partition) "
            "and the changelog after at most this many records", "worker", "Settings.flush_records"),
    Setting("TUSK_FLUSH_INTERVAL", "20ms", "… or after at most this long, and always before an offset "
            "commit and a rebalance", "worker", "Settings.flush_interval_ms"),
    Setting("TUSK_BLOCK_CACHE_MB", "4", "RocksDB block cache per partition database (MiB)", "worker",
            "Settings.block_cache_mb"),
    Setting("TUSK_WRITE_BUFFER_MB", "2", "RocksDB memtable size per partition database (MiB)", "worker",
            "Settings.write_buffer_mb"),
    Setting("TUSK_SESSION_TIMEOUT", "10s", "Kafka consumer session timeout: how soon a killed worker's "
            "partitions move", "worker", "Settings.session_timeout_ms"),
    Setting("TUSK_STANDBY_REPLICAS", "0", "standby copies of each table partition on other workers "
            "(faster failover)", "worker", "Settings.standby_replicas"),
    Setting("TUSK_PRODUCER_LINGER_MS", "10", "producer batching delay (ms) of the worker's writes",
            "worker", "Settings.producer_linger_ms"),
    Setting("TUSK_BULK_RESTORE", "120s", "how long a rebalance may restore new partitions in bulk before "
            "Faust's record-by-record recovery takes the rest; 0 turns it off", "worker",
            "Settings.bulk_restore_ms"),
    Setting("TUSK_API_TOKEN", "", "unset: the HTTP API is open; set: every route but /health, /metrics "
            "and /console needs `Authorization: Bearer <token>` (same value on every worker; the CLI "
            "sends it)", "worker, CLI"),
    Setting("TUSK_URL", "http://127.0.0.1:6066", "a worker's HTTP address, for `tusk profile get` and "
            "`tusk segments`", "CLI"),
    Setting("TUSK_COLLECTOR_HOST", "0.0.0.0", "address the collector listens on", "collector",
            "CollectorConfig.host"),
    Setting("TUSK_COLLECTOR_PORT", "8088", "port of the collector", "collector", "CollectorConfig.port"),
    Setting("TUSK_COLLECTOR_WRITE_KEYS", "", "accepted write keys, comma separated, each optionally "
            "`key=source` (the source its events' traits are ranked as, identity.yaml `trust`); unset: "
            "any non-empty key (logged as a warning)", "collector"),
    Setting("TUSK_COLLECTOR_MAX_BATCH_BYTES", "512000", "largest request body after decompression",
            "collector", "CollectorConfig.max_batch_bytes"),
    Setting("TUSK_COLLECTOR_DELIVERY_TIMEOUT_MS", "10000", "how long the collector waits for Kafka's "
            "acknowledgement before answering 503", "collector", "CollectorConfig.delivery_timeout_ms"),
    Setting("TUSK_TEST_NO_DOCKER", "", "tests only: `1` keeps the test suite from starting its Kafka broker "
            "in Docker (tests/conftest.py)", "tests"),
)

DECLARED: dict[str, Setting] = {s.name: s for s in SETTINGS}
FAMILIES: tuple[str, ...] = tuple(s.name.split("<")[0] for s in SETTINGS if "<" in s.name)
"""name prefixes of variable families (`TUSK_KAFKA_` of `TUSK_KAFKA_<NAME>`)"""

Env = Mapping[str, str]


def declared(name: str) -> Setting:
    """The declaration of `name` (a family member resolves to its family); a name nobody declared
    is a bug in the caller, not the user's mistake."""
    found = DECLARED.get(name) or next(
        (DECLARED[s] for s in DECLARED if "<" in s and name.startswith(s.split("<")[0])), None)
    if found is None:
        raise KeyError(f"{name} is not declared in SETTINGS of stream/runtime/variables.py")
    return found


def _env(env: Env | None) -> Env:
    return os.environ if env is None else env


def with_flags(flags: Mapping[str, object | None], env: Env | None = None) -> dict[str, str]:
    """The environment with the command line's flags over it ({variable: value}; None: not given)."""
    merged = dict(_env(env))
    for name, value in flags.items():
        declared(name)
        if value is not None:
            merged[name] = str(value)
    return merged


def given(name: str, env: Env | None = None) -> str | None:
    """The value set for `name`, None when it is unset or empty."""
    declared(name)
    return _env(env).get(name) or None


def text(name: str, env: Env | None = None, default: str | None = None) -> str:
    """The value of `name` as given (even empty), else its declared default (or `default`, for a
    default that depends on another setting, such as TUSK_DATADIR's)."""
    setting = declared(name)
    value = _env(env).get(name)
    if value is not None:
        return value
    return setting.default if default is None else default


def integer(name: str, minimum: int = 0, env: Env | None = None) -> int:
    raw = given(name, env)
    if raw is None:
        return int(declared(name).default)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number.") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: expected at least {minimum}.")
    return value


def _duration(name: str, raw: str, minimum_ms: int) -> int:
    try:
        value = timeutil.parse_duration_ms(raw, name)
    except ValueError as e:
        raise SettingsError(str(e)) from None
    if value < minimum_ms:
        raise SettingsError(f"{name}={raw!r}: expected at least {minimum_ms} ms.")
    return value


def duration(name: str, minimum_ms: int = 0, env: Env | None = None) -> int:
    """Milliseconds of a duration (`500ms`, `10s`, `24h`, `30d`, `105w`), default: the declared one."""
    return _duration(name, text(name, env), minimum_ms)


def optional_duration(name: str, minimum_ms: int = 0, env: Env | None = None) -> int | None:
    raw = given(name, env)
    return None if raw is None else _duration(name, raw, minimum_ms)


def optional_path(name: str, env: Env | None = None) -> Path | None:
    raw = given(name, env)
    return None if raw is None else Path(raw)


def choice(name: str, allowed: tuple[str, ...], env: Env | None = None) -> str:
    value = text(name, env)
    if value not in allowed:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(allowed)}.")
    return value


def family(prefix: str, env: Env | None = None) -> dict[str, str]:
    """{variable: value} of a declared family (`TUSK_KAFKA_`), empty values left out."""
    if prefix not in FAMILIES:
        raise KeyError(f"{prefix}<...> is not declared in SETTINGS of stream/runtime/variables.py")
    return {k: v for k, v in sorted(_env(env).items()) if k.startswith(prefix) and len(k) > len(prefix) and v}
