"""Identity resolution on real workers: final profiles = connected components of identifiers."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from stream.demo.session import wait_quiet
from tests.conftest import TuskEnv
from tests.graph import components
from tests.integration.harness import Deployment

pytestmark = pytest.mark.kafka


def multi_device_stream(people: int, seed: int) -> tuple[list[bytes], list[list[str]]]:
    """Events of people on several devices; returns (records, identifier keys per event)."""
    rng = random.Random(seed)
    records: list[bytes] = []
    keys: list[list[str]] = []
    n = 0
    for p in range(people):
        anon = [f"anon-{p}-{d}" for d in range(rng.randint(1, 3))]
        devices = [f"dev-{p}-{d}" for d in range(len(anon))]
        user = f"user-{p}" if rng.random() < 0.7 else None
        email = f"Person.{p}@Example.com" if rng.random() < 0.6 else None
        for _ in range(rng.randint(1, 6)):
            d = rng.randrange(len(anon))
            msg: dict[str, Any] = {"type": "page", "messageId": f"m{seed}-{n}", "anonymousId": anon[d],
                                   "timestamp": f"2024-03-{1 + n % 28:02d}T10:00:00Z"}
            event_keys = [f"anonymous_id:{anon[d]}"]
            if rng.random() < 0.5:
                msg["context"] = {"device": {"id": devices[d]}}
                event_keys.append(f"device_id:{devices[d]}")
            if user and rng.random() < 0.5:
                msg["userId"] = user
                event_keys.append(f"user_id:{user}")
                if email and rng.random() < 0.5:
                    msg["type"] = "identify"
                    msg["traits"] = {"email": email}
                    event_keys.append(f"email:{email.lower()}")
            records.append(orjson.dumps(msg))
            keys.append(event_keys)
            n += 1
    order = list(range(len(records)))
    rng.shuffle(order)  # arrival order across people and devices is arbitrary
    return [records[i] for i in order], [keys[i] for i in order]


@pytest.mark.parametrize("partitions,workers", [(1, 1), pytest.param(3, 2, marks=pytest.mark.slow), (8, 2)])
def test_profiles_are_the_connected_components(tusk_env: TuskEnv, tmp_path: Any, partitions: int,
                                               workers: int) -> None:
    env = {**tusk_env, "TUSK_PARTITIONS": str(partitions)}
    d = Deployment(env, tmp_path)
    try:
        for _ in range(workers):
            d.add_worker()
        records, keys = multi_device_stream(people=40, seed=partitions)
        sent = d.produce(records)
        d.wait_accounted(sent)
        wait_quiet(d.totals)
        comps = components(keys)
        ids = set()
        for i, comp in enumerate(sorted(comps, key=min)):
            expected_events = sum(1 for ks in keys if ks[0] in comp)
            answers = []
            for j, key in enumerate(sorted(comp)):
                kind, value = key.split(":", 1)
                w = d.workers[(i + j) % len(d.workers)]
                status, body = w.profile(kind, value)
                assert status == 200, (key, body)
                answers.append(body["id"])
                held = {f"{t}:{v}" for t, vs in body["identities"].items() for v in vs}
                assert held == comp, (key, held, comp)
                assert body["event_count"] == expected_events, (key, body["event_count"])
            assert len(set(answers)) == 1
            ids.add(answers[0])
        assert len(ids) == len(comps)
        totals = d.totals()
        assert totals.get("tusk_events_processed_total{outcome=applied}", 0) == len(records)
    finally:
        d.stop()
