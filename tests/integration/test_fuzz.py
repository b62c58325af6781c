"""Bad input at volume: arbitrary bytes and arbitrary JSON mixed with valid events.

The worker never stops and every input is accounted for: applied (or dropped as a
duplicate) or in the DLQ with a reason, and the counts reconcile exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TuskEnv
from tests.integration.harness import Deployment

pytestmark = pytest.mark.kafka

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
segmentish = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "page", "group", "alias", "screen", "bogus"])},
    optional={"messageId": st.text(max_size=12) | st.integers(), "userId": st.text(max_size=8) | st.none(),
              "anonymousId": st.text(max_size=8), "event": st.text(max_size=8) | st.integers(),
              "timestamp": st.text(max_size=25), "traits": json_values, "properties": json_values,
              "context": json_values, "groupId": st.text(max_size=5), "previousId": st.text(max_size=5)})


def valid(n: int, tag: str) -> bytes:
    return orjson.dumps({"type": "track", "event": "Fuzz Ok", "messageId": f"{tag}-ok-{n}",
                         "userId": f"fuzz-user-{n % 17}", "timestamp": "2024-02-02T10:00:00Z"})


def dumps(value: Any) -> bytes:
    # the standard library's encoder: big integers and lone surrogates are fair game here
    return json.dumps(value).encode()


inputs = st.lists(st.one_of(
    st.binary(max_size=200),
    json_values.map(dumps),
    segmentish.map(dumps),
    st.integers(0, 10_000).map(lambda n: valid(n, "v")),
), min_size=50, max_size=250)


@pytest.fixture(scope="module")
def fuzz_deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os
    import uuid

    run = f"f{uuid.uuid4().hex[:10]}"
    base = Path(tmp_path_factory.mktemp("fuzz"))
    env: TuskEnv = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TUSK_TOPIC_PREFIX": f"{run}.",
                    "TUSK_APP_ID": run, "TUSK_PARTITIONS": "3", "TUSK_LOG_LEVEL": "info"}
    d = Deployment(env, base)
    d.add_worker()
    yield d
    d.stop()


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=inputs)
def test_every_input_is_processed_or_dead_lettered(fuzz_deployment: Deployment, batch: list[bytes]) -> None:
    d = fuzz_deployment
    before = d.totals()
    accounted = ("tusk_events_processed_total", "tusk_events_rejected_total")
    base = sum(v for k, v in before.items() if k.startswith(accounted))
    d.produce(batch)
    after = d.wait_accounted(int(base) + len(batch), timeout=120)
    done = sum(v for k, v in after.items() if k.startswith(accounted))
    assert done == base + len(batch)  # each input exactly once: no loss, no double count
    assert after["tusk_events_in_total"] - before.get("tusk_events_in_total", 0) == len(batch)
    assert all(w.proc is not None and w.proc.poll() is None for w in d.workers)  # still running
    assert not any(k.startswith("tusk_events_rejected_total{reason=internal_error") for k in after)
