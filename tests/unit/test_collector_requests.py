"""The collector's request handling and Kafka settings, without a broker (stream/ingest/collector.py)."""

from __future__ import annotations

import base64
import gzip

import orjson
import pytest

from stream.ingest.collector import (
    CollectorConfig,
    Refused,
    build_records,
    check_write_key,
    decode_body,
    header_write_key,
    producer_config,
)
from stream.kafka.security import client_config, property_name
from stream.runtime.settings import Settings, SettingsError

NOW_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z


def refused(fn: object, *args: object) -> Refused:
    with pytest.raises(Refused) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


def test_write_key_from_basic_auth() -> None:
    assert header_write_key(None) is None
    assert header_write_key("Basic " + base64.b64encode(b"abc:").decode()) == "abc"
    assert header_write_key("basic " + base64.b64encode(b"abc").decode()) == "abc"
    assert header_write_key("Basic " + base64.b64encode(b"abc:ignored").decode()) == "abc"
    assert refused(header_write_key, "Bearer token").status == 401
    assert refused(header_write_key, "Basic ***").code == "invalid_write_key"


def test_write_key_check() -> None:
    check_write_key("any", None)
    check_write_key("k2", frozenset({"k1", "k2"}))
    for bad in (None, "", 42):
        assert refused(check_write_key, bad, None).status == 401
    assert refused(check_write_key, "k3", frozenset({"k1", "k2"})).status == 401


def test_gzip_is_bounded() -> None:
    assert decode_body(gzip.compress(b'{"a": 1}'), "gzip", 100) == b'{"a": 1}'
    assert decode_body(b"{}", None, 100) == b"{}"
    bomb = gzip.compress(b"0" * 10_000_000)
    assert len(bomb) < 20_000
    r = refused(decode_body, bomb, "gzip", 1000)
    assert (r.status, r.code) == (413, "batch_too_large")
    assert refused(decode_body, b"x" * 101, None, 100).status == 413
    assert refused(decode_body, b"{}", "deflate", 100).status == 415
    assert refused(decode_body, gzip.compress(b"{}" * 50)[:-10], "gzip", 1000).code == "invalid_gzip"


def test_single_event_enrichment() -> None:
    [(key, raw)] = build_records("identify", {"type": "track", "userId": "u1", "writeKey": "secret",
                                              "originalTimestamp": "2024-05-01T09:59:00Z",
                                              "sentAt": "2024-05-01T10:00:30Z"}, 32768, NOW_MS)
    ev = orjson.loads(raw)
    assert key == b"user_id:u1"  # the routing identifier: the partition that resolves it
    assert ev["type"] == "identify" and "writeKey" not in ev
    assert ev["receivedAt"] == "2024-05-01T10:00:00.000Z"
    assert ev["timestamp"] == "2024-05-01T09:58:30.000Z"  # sent 90 s after it happened, by the client clock
    assert len(ev["messageId"]) == 36


@pytest.mark.parametrize(("given", "expected"), [
    ({"timestamp": "2020-01-01T00:00:00Z", "sentAt": "2024-05-01T10:00:30Z"}, "2020-01-01T00:00:00Z"),
    ({"originalTimestamp": "2024-05-01T09:00:00Z"}, "2024-05-01T09:00:00Z"),
    ({}, "2024-05-01T10:00:00.000Z"),
    ({"originalTimestamp": "yesterday", "sentAt": "2024-05-01T10:00:30Z"}, "yesterday"),
])
def test_timestamp_rules(given: dict[str, str], expected: str) -> None:
    [(_, raw)] = build_records("track", {"anonymousId": "a", "event": "E", **given}, 32768, NOW_MS)
    assert orjson.loads(raw)["timestamp"] == expected


def test_batch_shares_context_integrations_and_sent_at() -> None:
    doc = {"writeKey": "k", "sentAt": "2024-05-01T10:00:00Z", "context": {"locale": "de", "app": "x"},
           "integrations": {"All": False},
           "batch": [{"type": "track", "event": "E", "anonymousId": 5, "messageId": "m1"},
                     {"type": "page", "userId": "u", "messageId": "m2", "context": {"locale": "fr"},
                      "integrations": {"All": True}, "sentAt": "2024-05-01T09:00:00Z"},
                     {"type": "page", "userId": "", "anonymousId": "a", "messageId": "m3"}]}
    records = build_records("batch", doc, 32768, NOW_MS)
    (k1, e1), (k2, e2), (k3, _) = [(k, orjson.loads(v)) for k, v in records]
    assert (k1, k2, k3) == (b"anonymous_id:5", b"user_id:u", b"anonymous_id:a")
    assert e1["context"] == {"locale": "de", "app": "x"} and e1["integrations"] == {"All": False}
    assert e1["sentAt"] == "2024-05-01T10:00:00Z"
    assert e2["context"] == {"locale": "fr", "app": "x"} and e2["integrations"] == {"All": True}
    assert e2["sentAt"] == "2024-05-01T09:00:00Z"
    assert build_records("batch", {"batch": []}, 32768, NOW_MS) == []


def test_batch_shape_and_size_errors() -> None:
    assert refused(build_records, "batch", {"batch": "x"}, 32768).code == "invalid_request"
    assert refused(build_records, "batch", {}, 32768).code == "invalid_request"
    assert refused(build_records, "batch", {"batch": [{}, None]}, 32768).code == "invalid_request"
    big = {"type": "track", "userId": "u", "event": "E", "properties": {"x": "y" * 1000}}
    r = refused(build_records, "batch", {"batch": [{"type": "page", "userId": "u"}, big]}, 1000)
    assert (r.status, r.code) == (413, "event_too_large") and "batch[1]" in r.message


def test_kafka_properties_from_environment() -> None:
    assert property_name("TUSK_KAFKA_SECURITY_PROTOCOL") == "security.protocol"
    assert property_name("TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_ID") == "sasl.oauthbearer.client.id"
    assert property_name("TUSK_KAFKA_LOG__LEVEL") == "log_level"
    env = {"TUSK_KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512", "TUSK_KAFKA_SASL_PASSWORD": "pw",
           "TUSK_KAFKA_EMPTY": "", "TUSK_KAFKA_": "x", "KAFKA_BOOTSTRAP_SERVERS": "b:9092"}
    assert client_config(env) == {"sasl.mechanisms": "SCRAM-SHA-512", "sasl.password": "pw"}


def test_durability_settings_cannot_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUSK_KAFKA_ACKS", "1")
    monkeypatch.setenv("TUSK_KAFKA_ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("TUSK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TUSK_KAFKA_SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b:9092")
    conf = producer_config(Settings.from_env(), CollectorConfig())
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["security.protocol"] == "SASL_SSL" and conf["bootstrap.servers"] == "b:9092"


def test_collector_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TUSK_COLLECTOR_WRITE_KEYS", "TUSK_COLLECTOR_PORT", "TUSK_COLLECTOR_HOST",
                 "TUSK_COLLECTOR_MAX_BATCH_BYTES"):
        monkeypatch.delenv(name, raising=False)
    default = CollectorConfig.from_env(Settings())
    assert (default.host, default.port, default.write_keys) == ("0.0.0.0", 8088, None)
    assert (default.max_event_bytes, default.max_batch_bytes) == (32 * 1024, 500 * 1024)
    monkeypatch.setenv("TUSK_COLLECTOR_WRITE_KEYS", " a, b ,,")
    monkeypatch.setenv("TUSK_COLLECTOR_PORT", "9000")
    assert CollectorConfig.from_env(Settings()).write_keys == frozenset({"a", "b"})
    assert CollectorConfig.from_env(Settings()).port == 9000
    monkeypatch.setenv("TUSK_COLLECTOR_MAX_BATCH_BYTES", "2000")
    with pytest.raises(SettingsError, match="at least TUSK_MAX_EVENT_BYTES"):
        CollectorConfig.from_env(Settings())
