"""The definitions in force, read from the compacted segments topic by every worker.

A plain, group-less confluent-kafka consumer (not a Faust GlobalTable, which
is unreliable with several workers) reads the whole topic at start-up, then
follows it in a thread. Each change builds a new processors.segments.catalog.Catalog
and swaps it in atomically; a record that does not compile against the rest
is logged and skipped, the previous definition under that key stays.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processors.common.predicates import DefinitionError
from processors.journeys import engine as journeys
from processors.predict.models import load_config as load_predict_config
from processors.segments.catalog import Catalog, parse_topic_key, topic_key
from processors.segments.definitions import parse_record
from stream.kafka.clients import connect, offsets, read_to_end, reader
from stream.runtime.settings import Settings

log = logging.getLogger(__name__)


State = TypeVar("State")


def add_until_stable(state: State, pending: dict[str, dict[str, Any]],
                     add: Callable[[State, str, dict[str, Any]], State]) -> tuple[State, dict[str, str]]:
    """Add each record (key → value, in that order) to `state` with `add`; records may refer to
    others later in key order, so those refused (DefinitionError) are retried until a pass adds
    none. (state, key → why it was skipped)."""
    pending = dict(pending)
    skipped: dict[str, str] = {}
    progress = True
    while pending and progress:
        progress = False
        for key, value in list(pending.items()):
            try:
                state = add(state, key, value)
            except DefinitionError as e:
                skipped[key] = str(e)
                continue
            skipped.pop(key, None)
            del pending[key]
            progress = True
    return state, skipped


def build(records: dict[str, dict[str, Any]], base: Catalog | None = None) -> tuple[Catalog, dict[str, str]]:
    """A Catalog from topic records (key → value); (catalog, key → why it was skipped)."""
    def add(catalog: Catalog, key: str, value: dict[str, Any]) -> Catalog:
        kind, ident = parse_topic_key(key)
        return catalog.put(kind, parse_record(kind, {**value, "id": ident}))

    pending = dict(sorted((k, v) for k, v in records.items() if not k.startswith(journeys.TOPIC_PREFIX)))
    return add_until_stable(base or Catalog(), pending, add)


def _journey(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return parse_record("journey", {**value, "id": key[len(journeys.TOPIC_PREFIX):]})


def build_journeys(records: dict[str, dict[str, Any]],
                   catalog: Catalog) -> tuple[journeys.Book, dict[str, str]]:
    """The journeys among topic records, checked against the catalog; (book, key → why skipped)."""
    pending = {k: v for k, v in sorted(records.items()) if k.startswith(journeys.TOPIC_PREFIX)}
    try:  # all together first: journeys may move customers to each other
        return journeys.Book.build([_journey(k, v) for k, v in pending.items()], catalog), {}
    except DefinitionError:
        pass  # find the bad ones one by one
    return add_until_stable(journeys.Book(), pending,
                            lambda book, key, value: book.put(_journey(key, value), catalog))


def fingerprint(catalog: Catalog) -> str:
    """Changes whenever any segment's effective definition changes (drives backfills)."""
    blob = orjson.dumps(sorted(catalog.versions.items()))
    return hashlib.sha1(blob).hexdigest()[:16]


class DefinitionsReader:
    def __init__(self, settings: Settings, on_change: Callable[[Catalog], None] | None = None) -> None:
        self.settings = settings
        self.topic = settings.topics.segments
        self.records: dict[str, dict[str, Any]] = {}
        self.base = Catalog(predict=load_predict_config(settings.predict_config)) \
            if settings.predict_config else Catalog()
        self.catalog = self.base
        self.journeys = journeys.Book()
        self.fingerprint = fingerprint(self.catalog)
        self.skipped: dict[str, str] = {}
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Read to the end of the topic (so the first event sees every definition), then follow."""
        connect(self.settings, timeout)  # a refused login fails here, with a sentence
        self._consumer = reader(self.settings, f"{self.settings.app_id}-definitions-unused",
                                **{"enable.partition.eof": True})
        ends = {p: high for p, (_low, high) in offsets(self._consumer, self.topic, timeout).items()}
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
        for msg in read_to_end(self._consumer, {p: high for p, high in ends.items() if high > 0}, timeout,
                               0.5, strict=False):
            self._take(msg)
        self._rebuild()
        self._thread = threading.Thread(target=self._follow, name="tusk-definitions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _take(self, msg: Any) -> None:
        key = (msg.key() or b"").decode("utf-8", "replace")
        if msg.value() is None:
            self.records.pop(key, None)
            return
        try:
            value = orjson.loads(msg.value())
        except orjson.JSONDecodeError:
            log.error("definitions topic: %s is not JSON; ignored", key)
            return
        if isinstance(value, dict):
            self.records[key] = value

    def _rebuild(self) -> None:
        catalog, skipped = build(self.records, self.base)
        book, skipped_journeys = build_journeys(self.records, catalog)
        skipped.update(skipped_journeys)
        for key, why in skipped.items():
            if self.skipped.get(key) != why:
                log.error("definition %s skipped: %s", key, why)
        self.catalog, self.skipped = catalog, skipped
        self.journeys = book
        self.fingerprint = fingerprint(catalog)
        if self.on_change is not None:
            self.on_change(catalog)

    def _follow(self) -> None:
        assert self._consumer is not None
        try:
            while not self._stop.is_set():
                msgs = self._consumer.consume(100, timeout=0.5)
                changed = False
                for msg in msgs:
                    if msg.error() is None:
                        self._take(msg)
                        changed = True
                if changed:
                    self._rebuild()
        except Exception:  # a dead reader would freeze definitions silently: say so loudly
            log.exception("definitions reader stopped")
        finally:
            self._consumer.close()


def produce_definition(settings: Settings, kind: str, ident: str, spec: dict[str, Any] | None) -> None:
    """Write one definition (None: delete it) and wait for the broker's acknowledgement."""
    from stream.kafka.clients import producer

    p = producer(settings)
    errors: list[Any] = []
    value = None if spec is None else orjson.dumps({"kind": kind, **spec, "id": ident})
    key = journeys.topic_key(ident) if kind == "journey" else topic_key(kind, ident)
    p.produce(settings.topics.segments, key=key.encode(), value=value,
              on_delivery=lambda err, _msg: errors.append(err) if err else None)
    if p.flush(15) or errors:
        raise RuntimeError(f"the definition {ident!r} was not acknowledged by Kafka: {errors or 'timeout'}")
