"""Restore a table partition's changelog into its RocksDB in bulk, before Faust's recovery.

Faust recovers record by record through its stream machinery: about 5k records/s here (py-spy:
asyncio futures per fetch, a queue hop and a recovery check per record). This reads the same
changelog with a group-less librdkafka consumer and writes it in RocksDB write batches, each
carrying the persisted offset of its last record, so that Faust's recovery, which starts from
the persisted offset, finds (almost) nothing left and what it finds it applies as before.

It runs inside Faust's rebalance callback (the partition's database is open, no agent reads
it yet), bounded in time: what is left after the budget Faust recovers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import rocksdict
from confluent_kafka import KafkaError, TopicPartition
from faust.types import TP

from stream.kafka.clients import reader, watermarks
from stream.kafka.topic_configs import ROLL_KEY
from stream.privacy.erasure import mark
from stream.runtime.faust_adapter import flush_memtable, persisted_offset_entry, store_db, write_unlogged
from stream.runtime.memory import release_freed_memory
from stream.runtime.settings import Settings

log = logging.getLogger(__name__)

BATCH_RECORDS = 5_000


def restore(store: Any, topic: str, partitions: list[int], settings: Settings,
            budget_s: float) -> dict[int, int]:
    """Records written per partition. Blocking: run in a thread."""
    started = time.monotonic()
    consumer = reader(settings, f"{settings.app_id}-restore", **{
        "enable.partition.eof": True, "fetch.max.bytes": 32 * 1024 * 1024,
        # librdkafka's pre-fetch queue: fetching goes on while Python writes; bounded, as the
        # worker's allocator keeps some of it after the restore
        "max.partition.fetch.bytes": 8 * 1024 * 1024, "queued.max.messages.kbytes": 64 * 1024})
    # no write-ahead log: each batch holds its records and their offset, and a batch lost in a
    # crash leaves an older offset, from which the changelog is read again
    written: dict[int, int] = {}
    try:
        todo: dict[int, int] = {}  # partition → end offset
        starts = []
        for p in partitions:
            low, high = watermarks(consumer, topic, p, timeout=10)
            persisted = store.persisted_offset(TP(topic, p))
            start = max(low, persisted + 1 if persisted is not None else low)
            if start < high:
                todo[p] = high
                starts.append(TopicPartition(topic, p, start))
                written[p] = 0
        if not todo:
            return written
        consumer.assign(starts)
        while todo and time.monotonic() - started < budget_s:
            msgs = consumer.consume(BATCH_RECORDS, timeout=1.0)
            batches: dict[int, Any] = {}
            last: dict[int, int] = {}
            for msg in msgs:
                p = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.pop(p, None)
                        continue
                    raise RuntimeError(f"restoring {topic}[{p}]: {err}")
                key, value, offset = msg.key(), msg.value(), msg.offset()
                if p not in todo or key is None or offset is None:  # done, or not a table's record
                    continue
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = rocksdict.WriteBatch(raw_mode=True)
                if value is None:
                    batch.delete(key)
                    if key != ROLL_KEY:
                        mark(store, p)  # a deleted key's old value may sit in the database
                else:
                    batch.put(key, value)
                last[p] = offset
                written[p] += 1
                if last[p] + 1 >= todo[p]:
                    todo.pop(p)
            for p, batch in batches.items():
                # the offset in the same batch: the database never claims more than it holds
                batch.put(*persisted_offset_entry(store, last[p]))
                write_unlogged(store_db(store, p), batch)
    finally:
        for p in written:  # Faust's recovery writes next, with its log (faust_adapter.UNLOGGED)
            flush_memtable(store_db(store, p))
        consumer.close()
        release_freed_memory()
    log.info("bulk restore of %s: %s records in %.1f s%s", topic, sum(written.values()),
             time.monotonic() - started, f" ({len(todo)} partitions left to Faust)" if todo else "")
    return written
