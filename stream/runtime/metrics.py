"""Prometheus metrics of one worker (served on GET /metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("tusk_events_in_total", "Records read from the touchpoints topic")
REJECTED = Counter("tusk_events_rejected_total", "Inputs sent to the DLQ, by reason", ["reason"])
PROCESSED = Counter(
    "tusk_events_processed_total",
    "Validated events handled by the profile stage, by outcome (applied, duplicate, redelivered)",
    ["outcome"],
)
PROFILES_CREATED = Counter("tusk_profiles_created_total", "Profiles minted by this worker")
PROFILES_STORED = Gauge(
    "tusk_profiles_stored", "Profiles held in this worker's RocksDB partitions (RocksDB estimate)")
PROCESSING_SECONDS = Histogram(
    "tusk_processing_seconds", "Profile-stage time per event",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
EVENT_LAG_SECONDS = Histogram(
    "tusk_event_lag_seconds", "Time from an input record's Kafka timestamp to its profile update",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
ROUTED = Counter(
    "tusk_events_routed_total", "Valid events by path: inline (read on the partition that resolves "
    "them, applied at once) or hop (sent over the internal topic to that partition)", ["path"])
IDENTITY_MESSAGES = Counter(
    "tusk_identity_messages_total", "Identity-protocol records handled, by kind (E event, A apply, "
    "L link, F freeze, M merge, X restore, U unlink, R repoint, G group)", ["kind"])
MERGES = Counter("tusk_merges_total", "Profiles absorbed into another (one per merged record)")
LIMIT_REFUSALS = Counter(
    "tusk_identity_limit_refusals_total",
    "Identifiers not linked because a per-profile limit would break, by identifier type", ["type"])
MERGE_REFUSALS = Counter(
    "tusk_merge_refusals_total", "Merges refused, by the identifier type whose limit forbade it",
    ["reason"])
QUARANTINED = Counter(
    "tusk_identifiers_quarantined_total",
    "Identifier values quarantined by the over-merge guard, by identifier type", ["type"])
REDIRECTS_FOLLOWED = Counter(
    "tusk_redirects_followed_total", "Records forwarded from a merged profile to its survivor")
SEGMENT_TRANSITIONS = Counter(
    "tusk_segment_transitions_total", "Segment entries and exits, by segment and transition",
    ["segment", "transition"])
RECHECKS = Counter(
    "tusk_rechecks_total", "Stored profiles re-evaluated without an event, by cause (time, backfill)",
    ["cause"])
BACKFILL_PARTITIONS_DONE = Gauge(
    "tusk_backfill_partitions_done", "Partitions of this worker whose profiles were evaluated "
    "against the current definitions")
DEFINITIONS = Gauge("tusk_definitions", "Definitions in force, by kind", ["kind"])
DEFINITIONS_SKIPPED = Gauge(
    "tusk_definitions_skipped", "Records of the definitions topic that do not compile (see the log)")
TRIGGERS = Counter("tusk_triggers_total", "Activation triggers published, by channel", ["channel"])
SUPPRESSED = Counter(
    "tusk_triggers_suppressed_total",
    "Triggers not sent, by channel and reason (unsubscribed, not_subscribed, no_consent, no_address, capped, "
    "left_segment, already_member)", ["channel", "reason"])
CONSUMER_LAG = Gauge(
    "tusk_consumer_lag_records", "Records not yet processed, per input/internal topic partition this "
    "worker owns (high watermark − committed offset)", ["topic", "partition"])
RECOVERY_REMAINING = Gauge(
    "tusk_recovery_remaining_records", "Changelog records this worker still has to restore before it "
    "serves its active partitions")
RECOVERY_STANDBY_REMAINING = Gauge(
    "tusk_recovery_standby_remaining_records", "Changelog records this worker's standby replicas "
    "are behind (0: a failover to this worker needs no restore)")
RESTORED_IN_BULK = Counter(
    "tusk_restored_in_bulk_records_total", "Changelog records restored in bulk on assignment "
    "(stream/state/restore.py), by changelog topic", ["topic"])


_CHILDREN: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """metric.labels(*labels), remembered: labels() costs microseconds, and a worker calls it
    for every segment transition (label values are bounded: segments, transitions)."""
    key = (metric, *labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


class Tally:
    """Counter increments of the hot path, added to Prometheus in one go (`fold`: from a timer
    of the worker and before every scrape). Each inc() takes a lock; a worker made about eight
    per event (py-spy on CDNOW: 2-3 % of its samples)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[Any, ...], float] = {}

    def add(self, metric: Any, *labels: str, n: float = 1) -> None:
        key = (metric, *labels)
        self.counts[key] = self.counts.get(key, 0) + n

    def add_each(self, metric: Any, labels: list[tuple[str, ...]]) -> None:
        """add(metric, *each) for each label tuple (several segment transitions per event)."""
        counts = self.counts
        for each in labels:
            key = (metric, *each)
            counts[key] = counts.get(key, 0) + 1

    def fold(self) -> None:
        counts, self.counts = self.counts, {}
        for (metric, *labels), n in counts.items():
            (child(metric, *labels) if labels else metric).inc(n)


TALLY = Tally()
tally = TALLY.add
"""tally(METRIC, *labels, n=1): count now, shown at the next fold (at most 50 ms later)."""
tally_each = TALLY.add_each
"""tally_each(METRIC, [labels, ...]): tally(METRIC, *labels) for each."""
