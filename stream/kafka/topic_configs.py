"""What the broker keeps, and for how long: every topic's config, derived from the settings.

Erasure deletes a person's state at once and writes tombstones on the changelogs; Kafka only
drops the old records when its log cleaner compacts a segment that is no longer active, and it
drops a tombstone `delete.retention.ms` after that. So every compacted topic Tusk creates (the
tables' changelogs, the definitions topic) gets, from TUSK_ERASE_WITHIN (E, default 7d):

  segment.ms            E/8  the active segment rolls, so the cleaner may compact it
  max.compaction.lag.ms E/8  a record shadowed by a newer one (a tombstone) is compacted
                             within this, whatever the dirty ratio
  delete.retention.ms   E/8  how long a tombstone itself stays after that compaction

and the worker appends a roll marker (a tombstone of the key ROLL_KEY) to each changelog
partition it owns every E/8 (ROLL_EVERY), so a quiet partition's segments roll too: Kafka rolls a
segment only when something is appended. Data shadowed at time t is compacted by about
t + E/4 (+ the cleaner's back-off), and its tombstones are gone by about t + 3E/4.

Every other topic that can hold personal data is deleted by time (`retention.ms`, with
`segment.ms` at most an eighth of it, since Kafka deletes whole segments):

  touchpoints   TUSK_TOUCHPOINTS_RETENTION  30d  the raw input (replays, a new worker's backlog)
  dlq           TUSK_DLQ_RETENTION          E/2  rejected input (original bytes) and internal records
  internal      TUSK_INTERNAL_RETENTION     E/2  identity-protocol records (events, links, …)
  changes       TUSK_CHANGES_RETENTION      E/2  profile changes (transitions, merges, erasures)
  activations   TUSK_ACTIVATIONS_RETENTION  E/2  triggers, with addresses and traits
  privacy       TUSK_PRIVACY_RETENTION      E/2  privacy requests and their results

Every topic but the raw input defaults to E/2 (the other half leaves room for the segment roll
and the broker's retention check), so the broker's copies of an erased person are gone within
TUSK_ERASE_WITHIN; consumers of them (workers included) must not lag behind by more than that.
Existing topics are brought to these configs when a worker starts (`enforce`: incremental alter
configs, one log line per topic changed, in stream/kafka/clients.py).
"""

from __future__ import annotations

from stream.runtime.settings import Settings

DAY_MS = 86_400_000
RAW_INPUT_DEFAULT_MS = 30 * DAY_MS
RETENTION_DEFAULTS: dict[str, int | None] = {
    "touchpoints": RAW_INPUT_DEFAULT_MS,
    "dlq": None, "internal": None, "changes": None, "activations": None, "privacy": None,
}
"""Default retention by topic kind; None: half of TUSK_ERASE_WITHIN."""

ROLL_KEY = b"__tusk_roll"
"""Key of the roll markers (tombstones) appended to changelog partitions."""


def step_ms(settings: Settings) -> int:
    """E/8: segment roll, compaction lag and tombstone retention of compacted topics."""
    return max(1, settings.erase_within_ms // 8)


ROLL_EVERY = step_ms
"""How often a worker appends a roll marker to the changelog partitions it owns."""


def retention_ms(settings: Settings, kind: str) -> int:
    given = settings.topic_retention_ms.get(kind)
    if given is not None:
        return given
    default = RETENTION_DEFAULTS[kind]
    return max(1000, settings.erase_within_ms // 2) if default is None else default


def compacted(settings: Settings) -> dict[str, str]:
    step = str(step_ms(settings))
    return {"cleanup.policy": "compact", "segment.ms": step, "max.compaction.lag.ms": step,
            "delete.retention.ms": step}


def deleted_after(ms: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(ms),
            "segment.ms": str(max(1, min(ms // 8, DAY_MS)))}


def for_kind(settings: Settings, kind: str) -> dict[str, str]:
    return deleted_after(retention_ms(settings, kind))


TABLES = ("identities", "profiles", "meta")


def changelogs(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name → config, for every topic a worker creates up front."""
    t = settings.topics
    return {
        t.touchpoints: for_kind(settings, "touchpoints"),
        t.dlq: for_kind(settings, "dlq"),
        t.segments: compacted(settings),
        t.profile_changes: for_kind(settings, "changes"),
        t.privacy: for_kind(settings, "privacy"),
        t.privacy_results: for_kind(settings, "privacy"),
        t.routed: for_kind(settings, "internal"),
        **{name: compacted(settings) for name in changelogs(settings)},
    }


def config_of(settings: Settings, topic: str) -> dict[str, str] | None:
    """The config Tusk wants for one of its topics (activation topics included), or None."""
    if topic.startswith(settings.topics.activations("")):
        return for_kind(settings, "activations")
    return topic_configs(settings).get(topic)


def differences(current: dict[str, str | None], wanted: dict[str, str]) -> dict[str, tuple[str | None, str]]:
    """Settings whose value differs: name → (current, wanted)."""
    return {k: (current.get(k), v) for k, v in wanted.items() if current.get(k) != v}
