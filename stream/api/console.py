"""The operator console: one self-contained web page served by every worker.

  GET /console                   the page (stream/api/static/console.{html,css,js}, inlined: no
                                 build step, nothing fetched from elsewhere). It looks profiles
                                 up by any identifier or id through
                                 /profiles/..., lists segments with live sizes (GET /segments,
                                 every 5 s), journeys as funnels of their steps with live counts
                                 (GET /journeys, every 5 s) and tails activation triggers (below,
                                 every 2 s).
  GET /console/triggers?after=N  the triggers this worker has seen since it started tailing, newer
                                 than sequence number N: {"epoch", "last", "triggers": [...],
                                 "status"}. `epoch` changes when the worker restarts (sequence
                                 numbers start again).

The tail is a confluent-kafka consumer in a background thread, started by the first request to
/console/triggers. It uses no consumer group (nothing committed, no rebalances with the
workers): it assigns itself every partition of every topic named {TUSK_TOPIC_PREFIX}activations.*
from the end offsets at start, looks for new channels' topics (and partitions) every 10 s and
reads those from their beginning (they were created after it started), and keeps the last 200
triggers in memory. Any worker's tail sees every trigger of the deployment.

Triggers carry delivery addresses and traits; the tail keeps neither: only which fields the
trigger had (`to_fields`, `trait_fields`), so the page shows nothing a profile lookup by an
authorized user would not. Like every route but /health, /metrics and the page itself,
/console/triggers needs the API token when TUSK_API_TOKEN is set (stream/api/auth.py); the page
asks for it, keeps it in the tab's sessionStorage and sends it as `Authorization: Bearer ...`.

Environment: TUSK_API_TOKEN (above); Kafka through the usual settings (KAFKA_BOOTSTRAP_SERVERS or
TUSK_BOOTSTRAP_SERVERS, TUSK_KAFKA_* client options, TUSK_TOPIC_PREFIX; stream/runtime/settings.py).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import threading
import time
import uuid
from collections import deque
from importlib import resources
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from faust.web import Request, Response, View

from stream.api.context import routes, served
from stream.api.web import json_response
from stream.kafka.clients import poll_record, reader, watermarks
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline
from stream.runtime.settings import Settings

KEEP = 200
REFRESH_S = 10.0
TRIGGER_FIELDS = ("trigger_id", "profile_id", "segment", "transition", "channel", "occurred_at",
                  "caused_by")


class TriggerTail:
    """The last `keep` triggers on {prefix}activations.*, read by a group-less consumer thread."""

    def __init__(self, settings: Settings, keep: int = KEEP, refresh_s: float = REFRESH_S) -> None:
        self.settings = settings
        self.prefix = settings.topics.activations("")
        self.keep = keep
        self.refresh_s = refresh_s
        self.epoch = uuid.uuid4().hex[:12]
        self.error: str | None = None
        self._items: deque[dict[str, Any]] = deque(maxlen=keep)
        self._seq = 0
        self._lock = threading.Lock()
        self._assigned: dict[str, set[int]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()

    # --- read by the web views (event loop thread) ---

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="tusk-console-triggers", daemon=True)
            self._thread.start()
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def last(self) -> int:
        return self._seq

    def since(self, after: int) -> list[dict[str, Any]]:
        with self._lock:
            return [t for t in self._items if t["seq"] > after]

    def status(self) -> dict[str, Any]:
        with self._lock:
            topics = {t: len(ps) for t, ps in self._assigned.items() if ps}
        return {"running": self._thread is not None and self._thread.is_alive(),
                "ready": self._ready.is_set(), "topics": sorted(topics),
                "partitions": sum(topics.values()), "keep": self.keep, "error": self.error}

    # --- the consumer thread ---

    def _run(self) -> None:
        consumer = reader(self.settings, f"{self.settings.app_id}-console-unused", **{
            "enable.auto.offset.store": False, "auto.offset.reset": "latest"})
        try:
            first = True
            next_scan = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_scan:
                    try:
                        self._scan(consumer, from_end=first)
                        first = False
                        self.error = None
                        self._ready.set()
                    except KafkaException as e:
                        self.error = f"cannot list the activation topics: {e}"
                    next_scan = time.monotonic() + self.refresh_s
                try:
                    msg = poll_record(consumer, 0.5)
                except KafkaException as e:
                    self.error = str(e.args[0])
                    continue
                if msg is not None:
                    self._add(msg)
        except Exception as e:  # keep the reason for /console/triggers; the worker carries on
            self.error = f"the trigger tail stopped: {e!r}"
            raise
        finally:
            consumer.close()

    def _scan(self, consumer: Consumer, from_end: bool) -> None:
        """Assign partitions not assigned yet: at their end on the first scan, else from the start."""
        md = consumer.list_topics(timeout=10)
        new: list[TopicPartition] = []
        for name, tmd in md.topics.items():
            if not name.startswith(self.prefix) or tmd.error is not None:
                continue
            known = self._assigned.get(name, set())
            for p in sorted(tmd.partitions):
                if p in known:
                    continue
                offset = OFFSET_BEGINNING
                if from_end:
                    try:
                        offset = watermarks(consumer, name, p, timeout=5.0)[1]
                    except KafkaException:
                        offset = OFFSET_END
                new.append(TopicPartition(name, p, offset))
        if not new:
            return
        consumer.incremental_assign(new)
        with self._lock:
            for tp in new:
                self._assigned.setdefault(tp.topic, set()).add(tp.partition)

    def _add(self, msg: Any) -> None:
        raw = msg.value()
        if raw is None:
            return
        try:
            trigger = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(trigger, dict):
            return
        topic = msg.topic() or ""
        entry: dict[str, Any] = {k: trigger.get(k) for k in TRIGGER_FIELDS}
        entry["channel"] = entry["channel"] or topic[len(self.prefix):]
        # which address and traits the channel got, never their values
        entry["to_fields"] = sorted(trigger["to"]) if isinstance(trigger.get("to"), dict) else []
        entry["trait_fields"] = sorted(trigger["traits"]) if isinstance(trigger.get("traits"), dict) else []
        entry.update(topic=topic, partition=msg.partition(), offset=msg.offset())
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._items.append(entry)


def _json(view: View, body: Any, status: int = 200) -> Response:
    return json_response(view, body, status, headers={"Cache-Control": "no-store"})


class ConsoleTriggers(View):
    async def get(self, request: Request) -> Response:
        raw = request.query.get("after", "0")
        try:
            after = int(raw)
        except ValueError:
            return _json(self, {"error": "invalid_parameter",
                                "message": f"after={raw!r}: expected a whole number"}, 400)
        tail: TriggerTail = served(self).parts[__name__]
        tail.start()
        return _json(self, {"epoch": tail.epoch, "last": tail.last, "triggers": tail.since(after),
                            "status": tail.status()})


class Console(View):
    async def get(self, request: Request) -> Response:
        return self.html(PAGE, headers=dict(PAGE_HEADERS))


# --- the page ---------------------------------------------------------------------------------


def _static(name: str) -> str:
    """A file of the page, from this package's data (editable or installed alike)."""
    return (resources.files(__package__ or "stream.api") / "static" / name).read_text(encoding="utf-8")


# the page's parts are files of this package (stream/api/static/), shipped as package data
STYLE = _static("console.css")
BODY = _static("console.html")
SCRIPT = _static("console.js")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>Tusk console</title><link rel=\"icon\" href=\"data:,\">\n"
        f"<style>{STYLE}</style></head>\n<body>{BODY}<script>{SCRIPT}</script></body></html>\n")

# the page runs only its own inline script and style, talks only to this worker, and is never
# framed or cached
PAGE_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; script-src {_sha256(SCRIPT)}; "
                                f"style-src {_sha256(STYLE)}; connect-src 'self'; img-src 'self' data:; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The routes of this module on a worker's app, with the app's trigger tail (started by the
    first request to /console/triggers)."""
    here = routes(built, pipeline, {"/console/triggers": ConsoleTriggers, "/console": Console})
    here.parts[__name__] = TriggerTail(pipeline.settings)
