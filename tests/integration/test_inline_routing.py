"""Events keyed by their routing identifier are resolved on the partition they are read from,
without the internal hop; events keyed otherwise take the hop; both end in the same profiles."""

from __future__ import annotations

import orjson
import pytest

from processors.ingest.identifiers import IdentityRules, input_key
from stream.kafka.clients import producer
from tests.integration.harness import Deployment

pytestmark = pytest.mark.kafka


def people(prefix: str, count: int) -> list[bytes]:
    lines = []
    for i in range(count):
        uid = f"{prefix}-{i}"
        lines.append(orjson.dumps({"type": "identify", "messageId": f"{uid}-a", "userId": uid,
                                   "timestamp": "2024-05-01T10:00:00Z",
                                   "traits": {"email": f"{uid}@example.com"}}))
        lines.append(orjson.dumps({"type": "track", "messageId": f"{uid}-b", "userId": uid,
                                   "event": "Order Completed", "timestamp": "2024-05-02T10:00:00Z",
                                   "properties": {"revenue": 10 + i}}))
    return lines


def test_routing_key_input_is_applied_inline_and_other_keys_take_the_hop(deployment: Deployment) -> None:
    w = deployment.add_worker()
    second = deployment.add_worker()
    deployment.wait_balanced()
    keyed = people("inl", 20)
    sent = deployment.produce(keyed)  # the CLI's producer: keyed by the routing identifier
    totals = deployment.wait_accounted(sent)
    assert totals.get('tusk_events_routed_total{path=inline}') == sent
    assert totals.get('tusk_events_routed_total{path=hop}', 0) == 0
    # on every worker, not only the group's leader (whose Faust consumer alone knew the
    # touchpoints topic's partition count)
    for worker in (w, second):
        assert worker.metrics().get('tusk_events_routed_total{path=inline}', 0) > 0

    # the same kind of events keyed by something else (a producer of its own) still arrive
    prod = producer(deployment.settings)
    other = people("hop", 20)
    for line in other:
        prod.produce(deployment.settings.topics.touchpoints, line, key=b"not-the-routing-key")
    assert prod.flush(30) == 0
    totals = deployment.wait_accounted(sent + len(other))
    assert totals['tusk_events_routed_total{path=hop}'] > 0
    assert totals['tusk_events_routed_total{path=inline}'] + totals[
        'tusk_events_routed_total{path=hop}'] == sent + len(other)

    for prefix in ("inl", "hop"):
        for i in range(20):
            status, profile = w.profile("email", f"{prefix}-{i}@example.com")
            assert status == 200, (prefix, i)
            assert profile["identities"]["user_id"] == [f"{prefix}-{i}"]
            assert profile["event_count"] == 2


def test_input_key_is_the_routing_identifier() -> None:
    rules = IdentityRules()
    assert input_key({"type": "track", "userId": "u1", "anonymousId": "a1"}, rules) == b"user_id:u1"
    assert input_key({"type": "page", "anonymousId": "a1",
                      "traits": {"email": " Jo@Example.com "}}, rules) == b"email:jo@example.com"
    assert input_key({"type": "track", "event": "x"}, rules) is None
    assert input_key(["not", "an", "event"], rules) is None
