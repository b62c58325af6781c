"""`tusk collector`: the Segment HTTP Tracking API in front of the touchpoints topic.

Routes: `POST /v1/batch`, `/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`,
`/v1/group`, `/v1/alias`; `GET /health` (200 when Kafka answers, else 503) and
`GET /metrics` (Prometheus). Segment's and RudderStack's SDKs work unchanged
when their `host` points here.

Write keys. The write key is the HTTP basic-auth user (password ignored), or
`writeKey` in the JSON body, as in Segment. `TUSK_COLLECTOR_WRITE_KEYS`
(comma separated) lists the accepted keys. When it is unset any non-empty key
is accepted (logged as a warning at start), but a key is still required: a
request without one comes from a misconfigured client, and answering 401 at
once is kinder than accepting data the real deployment would refuse. Keys are
compared in constant time and never forwarded to Kafka or logged. A key may name
its source, `key=source` (`TUSK_COLLECTOR_WRITE_KEYS="wk1=web, wk2=crm_import"`):
every event sent with it gets `context.source` set to that name, replacing what the
client wrote, so trait precedence (processors/profile/trust.py) can trust it. Events sent
with a key without a name keep their own `context.source`.

Limits, as Segment documents them: `TUSK_MAX_EVENT_BYTES` per event (32 KiB, the
worker's own limit, measured on the record as produced) and
`TUSK_COLLECTOR_MAX_BATCH_BYTES` per request body after decompression (500 KiB).
A request that breaks one is refused whole, nothing of it is produced.

Answers. 200 `{"success": true}` only after Kafka acknowledged every record of
the request (acks=all, idempotent producer). Errors carry
`{"success": false, "code": ..., "message": ...}` (the SDKs read `code` and
`message`): 400 `invalid_json` / `invalid_request` / `invalid_gzip`, 401
`invalid_write_key`, 413 `event_too_large` / `batch_too_large` (Segment documents
400 here; 413 is HTTP's status for it and what RudderStack's gateway answers,
and no SDK retries either), 415 `unsupported_encoding`, 503
`delivery_failed` (the SDKs retry 5xx; records that did land are dropped again
by the worker's messageId dedup).

Event-level checks (a track without `event`, no identifier, ...) are the
worker's: such events are produced and land in the DLQ with a reason, as for
any producer, instead of failing the other events of a batch.

Each event is enriched like Segment does: `type` from the route on single-event
routes; `messageId` (uuid4) when missing; `receivedAt` (collector clock);
the batch's `sentAt` on events without one; `context` and `integrations` of a
batch merged under each event's own; `timestamp` kept when given, else
corrected for client clock skew (`receivedAt - (sentAt - originalTimestamp)`),
else `originalTimestamp`, else `receivedAt`. `context.ip` is not filled from
the connection: behind a load balancer or a server-side SDK that address is
not the person's. The record key is the event's routing identifier (`user_id:u1`, by
identity.yaml's priority; processors.ingest.identifiers.input_key), so the event lands on the
partition whose worker resolves it without an internal hop, and one person's events keep
their order on the input topic.

Settings: `TUSK_COLLECTOR_HOST` (0.0.0.0), `TUSK_COLLECTOR_PORT` (8088),
`TUSK_COLLECTOR_WRITE_KEYS`, `TUSK_COLLECTOR_MAX_BATCH_BYTES` (512000),
`TUSK_COLLECTOR_DELIVERY_TIMEOUT_MS` (10000: below the SDKs' 15 s request
timeout), plus the worker's `KAFKA_BOOTSTRAP_SERVERS`, `TUSK_TOPIC_PREFIX`,
`TUSK_MAX_EVENT_BYTES` and `TUSK_KAFKA_*` (see stream/kafka/security.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import sys
import threading
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
from aiohttp import web
from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from processors.common.errors import DeliveryFailed, TuskError
from processors.common.timeutil import iso
from processors.ingest.events import parse_time
from processors.ingest.identifiers import IdentityRules, input_key
from stream.kafka import clients as kafka_io
from stream.runtime import variables as var
from stream.runtime.settings import Settings, SettingsError

log = logging.getLogger("tusk.collector")

SINGLE_ROUTES = ("track", "identify", "page", "screen", "group", "alias")
ROUTES = ("batch", *SINGLE_ROUTES)

REQUESTS = Counter("tusk_collector_requests_total", "Tracking API requests answered, by route and status",
                   ["route", "status"])
EVENTS = Counter("tusk_collector_events_total", "Events acknowledged by Kafka")
REJECTED = Counter("tusk_collector_rejected_total", "Requests refused, by reason", ["reason"])


@dataclass(frozen=True)
class CollectorConfig:
    host: str = "0.0.0.0"
    port: int = 8088
    write_keys: frozenset[str] | None = None
    """None: any non-empty key."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """write key → the source its events are from (context.source)"""
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    delivery_timeout_ms: int = 10_000
    rules: IdentityRules = field(default_factory=IdentityRules)
    """identity.yaml's rules: events are keyed by their routing identifier, as workers route them"""

    @classmethod
    def from_env(cls, settings: Settings, env: var.Env | None = None) -> CollectorConfig:
        raw_keys = var.given("TUSK_COLLECTOR_WRITE_KEYS", env)
        keys: frozenset[str] | None = None
        sources: dict[str, str] = {}
        if raw_keys is not None and raw_keys.strip():
            for entry in (e.strip() for e in raw_keys.split(",") if e.strip()):
                key, eq, source = (part.strip() for part in entry.partition("="))
                if not key or (eq and not source):
                    raise SettingsError(f"TUSK_COLLECTOR_WRITE_KEYS: {entry!r}: expected KEY or KEY=SOURCE.")
                if source:
                    sources[key] = source
            keys = frozenset(e.partition("=")[0].strip() for e in raw_keys.split(",") if e.strip())
        max_batch = var.integer("TUSK_COLLECTOR_MAX_BATCH_BYTES", 1024, env)
        if max_batch < settings.max_event_bytes:
            raise SettingsError(f"TUSK_COLLECTOR_MAX_BATCH_BYTES={max_batch}: expected at least "
                                f"TUSK_MAX_EVENT_BYTES ({settings.max_event_bytes}).")
        return cls(
            host=var.given("TUSK_COLLECTOR_HOST", env) or var.declared("TUSK_COLLECTOR_HOST").default,
            port=var.integer("TUSK_COLLECTOR_PORT", 1, env),
            write_keys=keys,
            sources=sources,
            max_event_bytes=settings.max_event_bytes,
            max_batch_bytes=max_batch,
            delivery_timeout_ms=var.integer("TUSK_COLLECTOR_DELIVERY_TIMEOUT_MS", 1000, env),
            rules=settings.identity_rules(),
        )


class Refused(TuskError):
    """A request answered with an error: HTTP status, machine code, one sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---------------------------------------------------------------- request → records (no I/O)


def header_write_key(authorization: str | None) -> str | None:
    """The write key of an `Authorization: Basic base64(key:)` header; None without header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Refused(401, "invalid_write_key",
                      "send the write key as the HTTP basic-auth user (other schemes are not supported)")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Refused(401, "invalid_write_key", "the basic-auth header is not valid base64") from None
    # Segment: "key:" (empty password); a bare "key" is accepted for old clients
    return decoded.partition(":")[0]


def check_write_key(key: Any, accepted: frozenset[str] | None) -> None:
    if not isinstance(key, str) or not key:
        raise Refused(401, "invalid_write_key",
                      "a write key is required (HTTP basic-auth user or `writeKey` in the body)")
    if accepted is None:
        return
    given = key.encode()
    # compare with every key, no early exit: the time taken does not tell which one matched
    matched = False
    for k in accepted:
        matched |= hmac.compare_digest(given, k.encode())
    if not matched:
        raise Refused(401, "invalid_write_key", "the write key is not valid for this collector")


def decode_body(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """The request body, gunzipped when sent with `Content-Encoding: gzip`, at most `limit` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        body = raw
    elif enc in ("gzip", "x-gzip"):
        # decompress at most limit+1 bytes: a small gzip bomb must not cost memory
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(raw, limit + 1)
            if len(body) <= limit and not inflater.eof:
                raise Refused(400, "invalid_gzip", "the gzip body is truncated")
        except zlib.error:
            raise Refused(400, "invalid_gzip", "the body is not valid gzip") from None
    else:
        raise Refused(415, "unsupported_encoding",
                      f"Content-Encoding {enc!r} is not supported; send gzip or no encoding")
    if len(body) > limit:
        raise Refused(413, "batch_too_large", f"the request body is larger than {limit} bytes")
    return body


def parse_document(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise Refused(400, "invalid_json", "the request body is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise Refused(400, "invalid_json", f"the body is not valid JSON ({e.msg} at byte {e.pos})") from None
    if not isinstance(doc, dict):
        raise Refused(400, "invalid_request", "the body must be a JSON object")
    return doc


def event_timestamp(event: dict[str, Any], received_ms: int, received_at: str) -> Any:
    """Segment's rule: kept when given, else skew-corrected, else originalTimestamp, else receivedAt."""
    if event.get("timestamp") is not None:
        return event["timestamp"]
    original, sent = event.get("originalTimestamp"), event.get("sentAt")
    if isinstance(original, str):
        original_ms = parse_time(original)
        sent_ms = parse_time(sent) if isinstance(sent, str) else None
        if original_ms is not None and sent_ms is not None:
            return iso(received_ms - (sent_ms - original_ms))
        return original
    return received_at


def build_records(route: str, doc: dict[str, Any], max_event_bytes: int,
                  now_ms: int | None = None, source: str | None = None,
                  rules: IdentityRules | None = None) -> list[tuple[bytes | None, bytes]]:
    """(key, value) records for a decoded request body; Refused when the request is unusable."""
    received_ms = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    received_at = iso(received_ms)
    doc.pop("writeKey", None)
    if route == "batch":
        items = doc.get("batch")
        if not isinstance(items, list):
            raise Refused(400, "invalid_request", "`batch` must be an array of events")
        shared_context = doc.get("context") if isinstance(doc.get("context"), dict) else None
        shared_integrations = doc.get("integrations") if isinstance(doc.get("integrations"), dict) else None
        batch_sent_at = doc.get("sentAt")
        events: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise Refused(400, "invalid_request", f"batch[{i}] must be a JSON object")
            item.pop("writeKey", None)
            if shared_context is not None:
                own = item.get("context")
                item["context"] = {**shared_context, **own} if isinstance(own, dict) else (
                    own if own is not None else dict(shared_context))
            if shared_integrations is not None and item.get("integrations") is None:
                item["integrations"] = dict(shared_integrations)
            if item.get("sentAt") is None and batch_sent_at is not None:
                item["sentAt"] = batch_sent_at
            events.append(item)
    else:
        doc["type"] = route  # the route decides, as in Segment
        events = [doc]
    records: list[tuple[bytes | None, bytes]] = []
    for i, event in enumerate(events):
        if event.get("messageId") is None:
            event["messageId"] = str(uuid4())
        event["receivedAt"] = received_at
        if source is not None:  # the write key's source, whatever the client claims
            ctx = event.get("context")
            event["context"] = {**ctx, "source": source} if isinstance(ctx, dict) else {"source": source}
        event["timestamp"] = event_timestamp(event, received_ms, received_at)
        try:
            value = orjson.dumps(event)
        except TypeError:  # cannot happen for parsed JSON, but never a 500 for it
            raise Refused(400, "invalid_request", f"event {i} cannot be encoded as JSON") from None
        if len(value) > max_event_bytes:
            where = f"batch[{i}]" if route == "batch" else "the event"
            raise Refused(413, "event_too_large",
                          f"{where} is {len(value)} bytes; the limit is {max_event_bytes} per event")
        records.append((input_key(event, rules), value))
    return records


# ---------------------------------------------------------------- Kafka


def _settle(fut: asyncio.Future[KafkaError | None], err: KafkaError | None) -> None:
    if not fut.done():
        fut.set_result(err)


class KafkaSink:
    """A confluent-kafka producer whose delivery reports resolve asyncio futures.

    librdkafka calls delivery callbacks from `poll()`; a thread polls so that the
    event loop never blocks, and each callback hands its result to the loop.
    """

    def __init__(self, conf: dict[str, Any], topic: str) -> None:
        self.topic = topic
        self._producer = Producer(conf)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="tusk-collector-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, records: list[tuple[bytes | None, bytes]], timeout_s: float) -> None:
        """Return once Kafka acknowledged every record; DeliveryFailed otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        futures: list[asyncio.Future[KafkaError | None]] = []

        def reporter(fut: asyncio.Future[KafkaError | None]) -> Callable[[Any, Any], None]:
            def delivered(err: KafkaError | None, _msg: Any) -> None:
                # RuntimeError: loop closed during shutdown, nobody waits any more
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, fut, err)
            return delivered

        for key, value in records:
            fut: asyncio.Future[KafkaError | None] = loop.create_future()
            while True:
                try:
                    self._producer.produce(self.topic, value=value, key=key, on_delivery=reporter(fut))
                    break
                except BufferError:  # local queue full: wait for deliveries to make room
                    if loop.time() > deadline:
                        raise DeliveryFailed("the producer queue stayed full") from None
                    await asyncio.sleep(0.01)
                except KafkaException as e:
                    raise DeliveryFailed(str(e.args[0])) from None
            futures.append(fut)
        results = await asyncio.gather(*futures)
        failed = [err for err in results if err is not None]
        if failed:
            raise DeliveryFailed(f"{len(failed)} of {len(records)} records were not acknowledged "
                                 f"({failed[0].name()})")

    def reachable(self, timeout: float) -> str | None:
        """None when the topic's metadata can be read, else why not (blocking)."""
        try:
            md = self._producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as e:
            return str(e.args[0])
        topic = md.topics.get(self.topic)
        if topic is None or topic.error is not None:
            return f"topic {self.topic} is not available"
        return None

    def close(self, timeout: float = 10.0) -> int:
        """Stop polling and flush; the number of records still undelivered."""
        self._stop.set()
        self._thread.join(5)
        return int(self._producer.flush(timeout))


def producer_config(settings: Settings, config: CollectorConfig) -> dict[str, Any]:
    # the 200 promises durability: acks and idempotence are fixed (kafka_io.PRODUCER_FIXED)
    return kafka_io.producer_config(settings, **{"client.id": "tusk-collector",
                                                 "delivery.timeout.ms": config.delivery_timeout_ms})


# ---------------------------------------------------------------- HTTP

SINK = web.AppKey("sink", KafkaSink)
CONFIG = web.AppKey("config", CollectorConfig)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_body(request: web.Request, limit: int) -> bytes:
    """At most `limit` bytes of the raw body (413 beyond), without trusting Content-Length."""
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, "batch_too_large", f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise Refused(413, "batch_too_large", f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def tracking_handler(route: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        config = request.app[CONFIG]
        try:
            header_key = header_write_key(request.headers.get("Authorization"))
            if header_key is not None:  # refuse before reading the body when we can
                check_write_key(header_key, config.write_keys)
            # a compressed body can be a little larger than its content; anything past a
            # small margin is over the decompressed limit anyway
            raw = await read_body(request, config.max_batch_bytes + config.max_batch_bytes // 16 + 1024)
            body = decode_body(raw, request.headers.get("Content-Encoding"), config.max_batch_bytes)
            doc = parse_document(body)
            if header_key is None:
                check_write_key(doc.get("writeKey"), config.write_keys)
            source = config.sources.get(str(header_key if header_key is not None else doc.get("writeKey")))
            records = build_records(route, doc, config.max_event_bytes, source=source, rules=config.rules)
            try:
                await request.app[SINK].send(records, config.delivery_timeout_ms / 1000 + 5)
            except DeliveryFailed as e:
                log.warning("collector: %d records not delivered: %s", len(records), e)
                raise Refused(503, "delivery_failed",
                              "Kafka did not acknowledge the events; retry the request") from None
        except Refused as r:
            REJECTED.labels(r.code).inc()
            REQUESTS.labels(route, str(r.status)).inc()
            headers = {"WWW-Authenticate": 'Basic realm="tusk"'} if r.status == 401 else None
            resp = json_response({"success": False, "code": r.code, "message": r.message}, r.status)
            if headers:
                resp.headers.update(headers)
            return resp
        EVENTS.inc(len(records))
        REQUESTS.labels(route, "200").inc()
        return json_response({"success": True})

    return handle


async def preflight(request: web.Request) -> web.StreamResponse:
    """CORS preflight: browsers may post to the collector directly, as to Segment's API."""
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
        "Access-Control-Max-Age": "86400",
    })


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/v1/") and "Origin" in request.headers:
        response.headers["Access-Control-Allow-Origin"] = "*"


async def health(request: web.Request) -> web.StreamResponse:
    sink = request.app[SINK]
    problem = await asyncio.get_running_loop().run_in_executor(None, sink.reachable, 3.0)
    if problem is not None:
        return json_response({"status": "unavailable", "message": problem}, 503)
    return json_response({"status": "ok", "topic": sink.topic})


async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(settings: Settings, config: CollectorConfig, sink: KafkaSink | None = None) -> web.Application:
    app = web.Application()
    app[CONFIG] = config
    app[SINK] = sink or KafkaSink(producer_config(settings, config), settings.topics.touchpoints)
    for route in ROUTES:
        app.router.add_post(f"/v1/{route}", tracking_handler(route))
        app.router.add_route("OPTIONS", f"/v1/{route}", preflight)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.on_response_prepare.append(cors_headers)

    async def started(_app: web.Application) -> None:
        keys = "any write key" if config.write_keys is None else f"{len(config.write_keys)} write key(s)"
        print(f"tusk collector: http://{config.host}:{config.port} → {settings.topics.touchpoints} "
              f"on {settings.bootstrap}, accepting {keys}", file=sys.stderr, flush=True)
        if config.write_keys is None:
            log.warning("TUSK_COLLECTOR_WRITE_KEYS is unset: any non-empty write key is accepted")

    async def cleanup(app: web.Application) -> None:
        left = await asyncio.get_running_loop().run_in_executor(None, app[SINK].close)
        if left:
            log.warning("collector: %d records were still undelivered at shutdown", left)

    app.on_startup.append(started)
    app.on_cleanup.append(cleanup)
    return app


def run(settings: Settings, config: CollectorConfig) -> None:
    levels = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
              "info": logging.INFO, "debug": logging.DEBUG}
    logging.basicConfig(level=levels.get(settings.log_level.lower(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # access_log=None: request lines carry client addresses, which are personal data
    web.run_app(build_app(settings, config), host=config.host, port=config.port, access_log=None,
                print=None, shutdown_timeout=15, auto_decompress=False)
