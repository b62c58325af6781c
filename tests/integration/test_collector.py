"""`tusk collector` as a real process on a real Kafka, driven by the real Segment and RudderStack SDKs."""

from __future__ import annotations

import base64
import gzip
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from processors.ingest.events import parse_time
from stream.demo.session import stop_process, wait_healthy
from stream.kafka.clients import client_config, read_topic
from tests.integration.harness import Deployment, free_port, settings_from

pytestmark = pytest.mark.kafka

WRITE_KEY = "wk-test"


class Collector:
    """One `tusk collector` process on a free port, accepting WRITE_KEY and one other key."""

    def __init__(self, env: dict[str, str], base: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.log = base / "collector.log"
        self.env = {**env, "TUSK_COLLECTOR_HOST": "127.0.0.1", "TUSK_COLLECTOR_PORT": str(self.port),
                    "TUSK_COLLECTOR_WRITE_KEYS": f"{WRITE_KEY}, wk-other", **extra_env}
        self.settings = settings_from(self.env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Collector:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "stream.cli.commands", "collector"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_healthy(self.url, self.proc, self.log, timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def post(self, path: str, body: bytes, key: str | None = WRITE_KEY,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        if key is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{key}:".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())

    def events(self) -> list[tuple[bytes | None, dict[str, Any]]]:
        return [(m.key(), orjson.loads(m.value()))
                for m in read_topic(self.settings, self.settings.topics.touchpoints, timeout=20)]


@pytest.fixture
def collector(tusk_env: dict[str, str], tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tusk_env, tmp_path)
    try:
        yield c.start()
    finally:
        c.stop()


def by_message_id(events: list[tuple[bytes | None, dict[str, Any]]]) -> dict[str, tuple[bytes | None,
                                                                                         dict[str, Any]]]:
    return {e["messageId"]: (k, e) for k, e in events}


def assert_error(answer: tuple[int, Any], status: int, code: str) -> None:
    got_status, body = answer
    assert got_status == status, answer
    # the SDKs read exactly these fields of an error answer
    assert body["success"] is False and body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]


def sdk_calls(client: Any, uid: str, prefix: str) -> None:
    """identify, track, group, alias, page and screen with explicit message ids."""
    client.identify(uid, {"email": f"{uid}@example.com", "plan": "pro"}, message_id=f"{prefix}-identify")
    client.track(uid, "Order Completed", {"revenue": 40, "currency": "EUR"}, message_id=f"{prefix}-track")
    client.group(uid, f"acme-{prefix}", {"name": "Acme", "role": "buyer"}, message_id=f"{prefix}-group")
    client.alias(f"anon-{prefix}", uid, message_id=f"{prefix}-alias")
    client.page(uid, name="Home", properties={"path": "/"}, message_id=f"{prefix}-page")
    client.screen(uid, name="Cart", message_id=f"{prefix}-screen")


def check_common(got: dict[str, tuple[bytes | None, dict[str, Any]]], uid: str, prefix: str) -> None:
    assert set(got) == {f"{prefix}-{kind}" for kind in
                        ("identify", "track", "group", "alias", "page", "screen")}
    for kind in ("identify", "track", "group", "alias", "page", "screen"):
        key, ev = got[f"{prefix}-{kind}"]
        assert ev["type"] == kind
        assert ev["userId"] == uid and key == f"user_id:{uid}".encode()  # the routing identifier
        assert "writeKey" not in ev  # never forwarded
        for field in ("receivedAt", "sentAt", "timestamp"):
            assert isinstance(ev[field], str) and len(ev[field]) >= 10, (field, ev)
    track = got[f"{prefix}-track"][1]
    assert track["event"] == "Order Completed"
    assert track["properties"] == {"revenue": 40, "currency": "EUR"}
    assert got[f"{prefix}-group"][1]["groupId"] == f"acme-{prefix}"
    assert got[f"{prefix}-group"][1]["traits"]["name"] == "Acme"
    assert got[f"{prefix}-alias"][1]["previousId"] == f"anon-{prefix}"
    assert got[f"{prefix}-page"][1]["name"] == "Home"
    assert got[f"{prefix}-screen"][1]["name"] == "Cart"


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_segment_sdk_events_arrive(collector: Collector, use_gzip: bool) -> None:
    errors: list[Any] = []
    client = SegmentClient(WRITE_KEY, host=collector.url, gzip=use_gzip, max_retries=1,
                           on_error=lambda e, batch: errors.append(e))
    sdk_calls(client, "seg-user", "seg")
    client.shutdown()
    assert errors == []
    got = by_message_id(collector.events())
    check_common(got, "seg-user", "seg")
    identify = got["seg-identify"][1]
    assert identify["traits"] == {"email": "seg-user@example.com", "plan": "pro"}
    assert identify["context"]["library"]["name"] == "analytics-python"


def test_rudderstack_sdk_events_arrive(collector: Collector) -> None:
    errors: list[Any] = []
    # RudderStack's SDK gzips by default
    client = RudderClient(WRITE_KEY, host=collector.url, max_retries=1,
                          on_error=lambda e, batch: errors.append(e))
    sdk_calls(client, "rs-user", "rs")
    client.shutdown()
    assert errors == []
    got = by_message_id(collector.events())
    check_common(got, "rs-user", "rs")
    # RudderStack carries identify traits in context.traits (the worker reads both places)
    identify = got["rs-identify"][1]
    assert identify["context"]["traits"] == {"email": "rs-user@example.com", "plan": "pro"}
    assert identify["channel"] == "server"


def test_http_api_fills_type_message_id_and_times(collector: Collector) -> None:
    assert collector.post("/v1/identify", orjson.dumps(
        {"type": "track", "anonymousId": "anon-1", "traits": {"plan": "free"},
         "originalTimestamp": "2024-05-01T10:00:00.000Z", "sentAt": "2024-05-01T10:00:05.000Z"})) == (
        200, {"success": True})
    assert collector.post("/v1/batch", orjson.dumps({
        "writeKey": "wk-other", "sentAt": "2024-05-01T10:00:09Z", "context": {"locale": "de-DE"},
        "batch": [{"type": "track", "userId": 7, "event": "Signed Up", "messageId": "b-1",
                   "timestamp": "2024-05-01T09:00:00Z", "writeKey": "leak?"},
                  {"type": "page", "userId": "u-2", "messageId": "b-2",
                   "context": {"locale": "fr-FR", "ip": "203.0.113.9"}}]}), key=None) == (
        200, {"success": True})
    events = collector.events()
    assert len(events) == 3
    got = by_message_id(events)
    key, tracked = got["b-1"]
    assert key == b"user_id:7" and tracked["timestamp"] == "2024-05-01T09:00:00Z"  # kept as sent
    assert tracked["sentAt"] == "2024-05-01T10:00:09Z"  # the batch's sentAt
    assert tracked["context"] == {"locale": "de-DE"} and "writeKey" not in tracked
    assert got["b-2"][1]["context"] == {"locale": "fr-FR", "ip": "203.0.113.9"}  # the event's own wins
    [(key, identified)] = [(k, e) for k, e in events if e["type"] == "identify"]
    assert key == b"anonymous_id:anon-1"
    assert identified["type"] == "identify"  # from the route, not the body
    assert len(identified["messageId"]) == 36  # a uuid4 was minted
    # skew corrected: the event happened 5 s before the client sent it, by the collector's clock
    ts, rcv = parse_time(identified["timestamp"]), parse_time(identified["receivedAt"])
    assert ts is not None and rcv is not None and rcv - ts == 5000


def test_browser_preflight_and_cors(collector: Collector) -> None:
    req = urllib.request.Request(collector.url + "/v1/track", method="OPTIONS", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
    # analytics.js style: text/plain body with the write key inside, from another origin
    req = urllib.request.Request(collector.url + "/v1/page", method="POST", data=orjson.dumps(
        {"anonymousId": "browser-1", "name": "Home", "writeKey": WRITE_KEY}),
        headers={"Content-Type": "text/plain", "Origin": "https://shop.example"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    [(key, ev)] = collector.events()
    assert key == b"anonymous_id:browser-1" and ev["type"] == "page"


def test_write_key_is_required_and_checked(collector: Collector) -> None:
    ok = orjson.dumps({"userId": "u", "event": "E"})
    assert_error(collector.post("/v1/track", ok, key=None), 401, "invalid_write_key")
    assert_error(collector.post("/v1/track", ok, key="wrong"), 401, "invalid_write_key")
    assert_error(collector.post("/v1/track", ok, key=""), 401, "invalid_write_key")
    assert_error(collector.post("/v1/track", orjson.dumps({"userId": "u", "event": "E", "writeKey": "nope"}),
                                key=None), 401, "invalid_write_key")
    assert_error(collector.post("/v1/track", ok, key=None, headers={"Authorization": "Bearer abc"}),
                 401, "invalid_write_key")
    # Segment's clients and the password-less form both work
    assert collector.post("/v1/track", ok, key="wk-other") == (200, {"success": True})
    bare = {"Authorization": "Basic " + base64.b64encode(WRITE_KEY.encode()).decode()}
    assert collector.post("/v1/track", ok, key=None, headers=bare) == (200, {"success": True})
    assert len(collector.events()) == 2


def test_gzip_bodies(collector: Collector) -> None:
    body = orjson.dumps({"batch": [{"type": "track", "userId": "gz", "event": "Zipped",
                                    "messageId": "gz-1"}]})
    gz = {"Content-Encoding": "gzip"}
    assert collector.post("/v1/batch", gzip.compress(body), headers=gz) == (200, {"success": True})
    assert_error(collector.post("/v1/batch", b"\x1f\x8bnot really gzip", headers=gz), 400, "invalid_gzip")
    assert_error(collector.post("/v1/batch", gzip.compress(body)[:-12], headers=gz), 400, "invalid_gzip")
    assert_error(collector.post("/v1/batch", body, headers={"Content-Encoding": "br"}), 415,
                 "unsupported_encoding")
    [(key, ev)] = collector.events()
    assert key == b"user_id:gz" and ev["event"] == "Zipped"


def test_size_limits(collector: Collector) -> None:
    big = {"type": "track", "userId": "u", "event": "Big", "properties": {"blob": "x" * 33_000}}
    assert_error(collector.post("/v1/track", orjson.dumps(big)), 413, "event_too_large")
    small = {"type": "track", "userId": "u", "event": "Small"}
    # one oversized event refuses the whole batch: nothing of it is produced
    answer = collector.post("/v1/batch", orjson.dumps({"batch": [small, big, small]}))
    assert_error(answer, 413, "event_too_large")
    assert "batch[1]" in answer[1]["message"]
    # 20 events of 30 KB: each is fine, the request is over 500 KB
    many = [{**small, "properties": {"blob": "y" * 30_000}} for _ in range(20)]
    body = orjson.dumps({"batch": many})
    assert len(body) > 500 * 1024
    assert_error(collector.post("/v1/batch", body), 413, "batch_too_large")
    # the limit applies to the decompressed body (a gzip bomb costs nothing)
    assert len(gzip.compress(body)) < 10_000
    assert_error(collector.post("/v1/batch", gzip.compress(body), headers={"Content-Encoding": "gzip"}),
                 413, "batch_too_large")
    # just under both limits is accepted
    fits = orjson.dumps({"batch": many[:15]})
    assert collector.post("/v1/batch", fits) == (200, {"success": True})
    assert len(collector.events()) == 15


def test_invalid_json_and_shapes(collector: Collector) -> None:
    assert_error(collector.post("/v1/track", b'{"userId": "u", "event": '), 400, "invalid_json")
    assert_error(collector.post("/v1/track", b""), 400, "invalid_json")
    assert_error(collector.post("/v1/track", b"\xff\xfe"), 400, "invalid_json")
    assert_error(collector.post("/v1/track", b"[1, 2]"), 400, "invalid_request")
    assert_error(collector.post("/v1/batch", b'{"batch": {"type": "track"}}'), 400, "invalid_request")
    assert_error(collector.post("/v1/batch", b'{"batch": [{"type": "track"}, 3]}'), 400, "invalid_request")
    assert collector.events() == []
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in urllib.request.urlopen(
        collector.url + "/metrics", timeout=5).read().decode().splitlines() if line.startswith("tusk_")}
    assert samples['tusk_collector_rejected_total{reason="invalid_json"}'] == 3
    assert samples['tusk_collector_rejected_total{reason="invalid_request"}'] == 3
    assert samples['tusk_collector_requests_total{route="batch",status="400"}'] == 2


def test_delivery_failure_is_503(tusk_env: dict[str, str], tmp_path: Path) -> None:
    """A record the broker refuses (topic limit below the event's size) is not acknowledged."""
    settings = settings_from(tusk_env)
    admin = AdminClient(client_config(settings))
    topic = settings.topics.touchpoints
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "2000"})])[topic].result()
    c = Collector(tusk_env, tmp_path).start()
    try:
        small = orjson.dumps({"userId": "u", "event": "Small", "messageId": "ok-1"})
        large = orjson.dumps({"userId": "u", "event": "Large", "properties": {"blob": "z" * 5000}})
        assert_error(c.post("/v1/track", large), 503, "delivery_failed")
        assert c.post("/v1/track", small) == (200, {"success": True})
        assert [e["messageId"] for _, e in c.events()] == ["ok-1"]
    finally:
        c.stop()


def test_identify_from_segment_sdk_becomes_a_profile(deployment: Deployment, tmp_path: Path) -> None:
    worker = deployment.add_worker()
    c = Collector(deployment.env, tmp_path).start()
    try:
        errors: list[Any] = []
        client = SegmentClient(WRITE_KEY, host=c.url, max_retries=1, on_error=lambda e, b: errors.append(e))
        client.identify("e2e-user", {"email": " Ada@Example.com", "first_name": "Ada"},
                        anonymous_id="e2e-anon", message_id="e2e-1")
        client.track("e2e-user", "Order Completed", {"revenue": 12.5}, message_id="e2e-2")
        client.shutdown()
        assert errors == []
        deployment.wait_accounted(2)
        deadline = time.monotonic() + 30
        status, profile = worker.profile("user_id", "e2e-user")
        while status != 200 and time.monotonic() < deadline:  # identity links settle asynchronously
            time.sleep(0.5)
            status, profile = worker.profile("user_id", "e2e-user")
        assert status == 200, profile
        assert profile["traits"]["first_name"] == "Ada"
        assert profile["event_count"] == 2
        assert profile["identities"]["anonymous_id"] == ["e2e-anon"]
        by_email = worker.profile("email", "ada@example.com")
        while by_email[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            by_email = worker.profile("email", "ada@example.com")
        assert by_email == (200, worker.profile("user_id", "e2e-user")[1])
        c_metrics = urllib.request.urlopen(c.url + "/metrics", timeout=5).read().decode()
        assert "tusk_collector_events_total 2.0" in c_metrics
    finally:
        c.stop()


def test_cli_refuses_bad_settings_in_one_sentence(tusk_env: dict[str, str]) -> None:
    env = {**tusk_env, "TUSK_COLLECTOR_PORT": "eighty"}
    out = subprocess.run([sys.executable, "-m", "stream.cli.commands", "collector"], env=env,
                         capture_output=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.decode().strip() == "tusk: TUSK_COLLECTOR_PORT='eighty': expected a whole number."
