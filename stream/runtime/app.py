"""The Faust application, its topics and tables: `build_app(settings)`.

Importing the module builds nothing: the worker (stream/runtime/worker.py) builds its app from the
settings it was given, then registers the agents (stream/runtime/agents.py) and the views
(stream/api/) on what `build_app` returns.

Topic and table names (operators see these in Kafka):
  {prefix}touchpoints            input, any partition count
  {prefix}internal.events        identity-protocol records (events, links, merges), keyed by the
                                 table key they touch, N partitions (processors/identity/graph.py)
  {app_id}-identities-changelog  identifier key → profile id
  {app_id}-profiles-changelog    profile id → profile JSON
  {app_id}-meta-changelog        per partition: re-check deadlines, segment sizes, the
                                 event-time watermark, the definitions backfilled
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from stream.kafka import security as kafka_security
from stream.kafka.outbox import Outbox, OutboxTable
from stream.kafka.topic_configs import compacted
from stream.runtime.faust_adapter import Fetch, fetch_in_batches, share_rocksdb_memory
from stream.runtime.settings import Settings, SettingsError
from stream.state.writeback import WriteBack


@dataclass(frozen=True)
class TuskApp:
    """A worker's Faust app with its topics and tables, and what its tables write through: the
    write-back layer and the outbox (`build_app`)."""

    app: faust.App
    touchpoints: Any
    routed: Any
    dlq: Any
    privacy: Any
    results: Any
    changes: Any
    identities: Any
    profiles: Any
    meta: Any
    outbox: Outbox
    writeback: WriteBack


def build_app(settings: Settings) -> TuskApp:
    """The Faust app, its topics and tables, of these settings, with the app's outbox and
    write-back layer (nothing is connected yet: the worker starts the outbox)."""
    topics = settings.topics
    try:  # TUSK_KAFKA_* security settings, mapped for Faust's aiokafka consumer and producer
        credentials = kafka_security.faust_credentials(settings.kafka_extra)
    except kafka_security.KafkaSecurityError as e:
        raise SettingsError(str(e)) from None

    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=credentials,
        store="rocksdb://",
        datadir=str(settings.datadir),
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=f"http://{settings.advertised_host}:{settings.web_port}",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        table_standby_replicas=settings.standby_replicas,
        # a killed worker is noticed after the session timeout (Faust's default: 60 s), then its
        # partitions move; shorter means faster failover, at the price of more heartbeats
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 3000),
        # the group waits this long for a member to rejoin; a member restoring new partitions in
        # bulk (stream/state/restore.py) rejoins once its budget is spent
        broker_rebalance_timeout=max(60.0, settings.bulk_restore_ms / 1000 + 60),
        consumer_auto_offset_reset="earliest",
        # batch internal records and changelog writes instead of one request each
        producer_linger_ms=settings.producer_linger_ms,
        autodiscover=False,
        web_in_thread=False,
        key_serializer="raw",
        value_serializer="raw",
        Table=OutboxTable,  # changelog writes through the librdkafka producer (stream/kafka/outbox.py)
    )
    # records of a busy partition do not wait behind a fetch of quiet ones (faust_adapter.py);
    # a busy worker waits longer, for larger batches; an idle one asks for any record (fetch_wait.py)
    fetch_in_batches(app, Fetch(settings.fetch_min_bytes, settings.fetch_wait_ms, settings.fetch_wait_busy_ms,
                                settings.fetch_idle_wait_ms))
    outbox = Outbox()
    writeback = WriteBack(settings.state_cache_mb << 20, settings.flush_records, settings.flush_interval_ms)
    outbox.bind(app, writeback)

    def topic(name: str, **kw: Any) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, **kw)

    # RocksDB memory: one block cache and one memtable budget for every partition database of
    # the worker (faust_adapter.py); Faust's defaults (a 2 GiB cache per database, 64 MiB × 3
    # memtables) would let a worker's RSS climb with the partitions it holds and the data
    share_rocksdb_memory(settings.block_cache_mb << 20, settings.memtables_mb << 20)
    store_options = {"write_buffer_size": settings.write_buffer_mb << 20, "max_write_buffer_number": 2}
    # should Faust create a changelog itself: compacted within the erasure deadline
    changelog_configs = {k: v for k, v in compacted(settings).items() if k != "cleanup.policy"}

    def table(name: str) -> Any:
        return app.Table(name, partitions=settings.partitions, key_type=bytes, value_type=bytes,
                         options=dict(store_options), extra_topic_configs=changelog_configs)

    return TuskApp(
        app=app,
        touchpoints=topic(topics.touchpoints),
        routed=topic(topics.routed, partitions=settings.partitions),
        dlq=topic(topics.dlq),
        privacy=topic(topics.privacy),
        results=topic(topics.privacy_results),
        changes=topic(topics.profile_changes),
        identities=table("identities"),
        profiles=table("profiles"),
        # Partition-local bookkeeping, written only while handling a record of that partition
        # (so each partition's RocksDB holds its own keys); its layout: stream/state/partition.py
        meta=table("meta"),
        outbox=outbox,
        writeback=writeback,
    )

