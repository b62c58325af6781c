"""The Faust application, its topics and tables, built from Settings at import.

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

import faust

from stream.kafka import security as kafka_security
from stream.kafka.outbox import OutboxTable
from stream.kafka.topic_configs import compacted
from stream.runtime.settings import SettingsError, in_force

# the worker's (stream/runtime/worker.py hands its settings over), else the environment's
settings = in_force()
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

touchpoints_topic = app.topic(topics.touchpoints, key_type=bytes, value_type=bytes)
routed_topic = app.topic(topics.routed, key_type=bytes, value_type=bytes,
                         partitions=settings.partitions)
dlq_topic = app.topic(topics.dlq, key_type=bytes, value_type=bytes)
privacy_topic = app.topic(topics.privacy, key_type=bytes, value_type=bytes)
results_topic = app.topic(topics.privacy_results, key_type=bytes, value_type=bytes)
changes_topic = app.topic(topics.profile_changes, key_type=bytes, value_type=bytes)

# RocksDB memory is per partition database (3 tables × partitions): Faust's defaults (2 GiB block
# cache, 64 MiB × 3 memtables) would let a worker's RSS climb with the data; bound both
_store_options = {"block_cache_size": settings.block_cache_mb * 1024 * 1024,
                  "block_cache_compressed_size": 1024 * 1024,
                  "write_buffer_size": settings.write_buffer_mb * 1024 * 1024,
                  "max_write_buffer_number": 2}
# should Faust create a changelog itself: compacted within the erasure deadline
_changelog_configs = {k: v for k, v in compacted(settings).items() if k != "cleanup.policy"}

identities = app.Table(
    "identities", partitions=settings.partitions, key_type=bytes, value_type=bytes,
    options=dict(_store_options), extra_topic_configs=_changelog_configs,
)
profiles = app.Table(
    "profiles", partitions=settings.partitions, key_type=bytes, value_type=bytes,
    options=dict(_store_options), extra_topic_configs=_changelog_configs,
)

# Partition-local bookkeeping, written only while handling a record of that partition
# (so each partition's RocksDB holds its own keys; read by scanning that database):
#   b"d" + deadline (8 bytes, big-endian ms) + profile id  → b""   re-check index, in time order
#   b"s"                                                     → member count by segment (JSON)
#   b"w"                                                     → event-time watermark: [ms, tick offset]
#   b"sw"                                                    → per input partition [event time, idle]
#   b"bv"                                                    → fingerprint of definitions backfilled
meta = app.Table(
    "meta", partitions=settings.partitions, key_type=bytes, value_type=bytes,
    options=dict(_store_options), extra_topic_configs=_changelog_configs,
)
