"""Predictions on real workers: the CDNOW purchase log through the collector and Kafka,
`tusk predict fit` against the published parameters, per-customer predictions over HTTP
against the closed-form formulas, and a p_alive segment."""

from __future__ import annotations

import random
import subprocess
import sys
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.cli.base import http_get
from tests.integration.harness import Deployment, wait_for
from tests.integration.test_collector import WRITE_KEY, Collector
from tests.unit.test_predict import (
    PUBLISHED_BG,
    PUBLISHED_GG,
    cdnow_sample,
    independent_expected,
    independent_p_alive,
)

pytestmark = pytest.mark.kafka
EPOCH = date(1970, 1, 1)


def iso_day(day: int, hour: int) -> str:
    return f"{EPOCH + timedelta(days=day)}T{hour:02d}:00:00Z"


def test_cdnow_through_the_collector_fits_the_published_model(tusk_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    env = {**tusk_env, "TUSK_CLOCK": "event", "TUSK_LOG_LEVEL": "warn"}
    deployment = Deployment(env, tmp_path)
    collector = Collector(env, tmp_path)
    try:
        workers = [deployment.add_worker(), deployment.add_worker()]
        collector.start()
        rows = sorted(enumerate(cdnow_sample()), key=lambda r: (r[1][1], r[0]))  # in event-time order
        batch: list[dict[str, Any]] = []
        for i, (cid, day, dollars) in rows:
            batch.append({"type": "track", "event": "Order Completed", "userId": f"cdnow-{cid}",
                          "messageId": f"cdnow-{i}", "timestamp": iso_day(day, 8 + i % 12),
                          "properties": {"revenue": dollars, "order_id": f"o{i}"}})
            if len(batch) == 500 or i == rows[-1][0]:
                status, body = collector.post("/v1/batch", orjson.dumps({"batch": batch}), WRITE_KEY)
                assert status == 200, body
                batch = []
        deployment.wait_accounted(len(rows), timeout=600)

        out = subprocess.run([sys.executable, "-m", "stream.cli.commands", "predict", "fit",
                              "--until", "1997-09-30", "--unit", "week", "--url", workers[0].url],
                             env=env, capture_output=True, timeout=600)
        assert out.returncode == 0, out.stderr.decode()
        fitted = orjson.loads(out.stdout)
        assert fitted["customers"] == 2357 and fitted["unit"] == "week"
        for k, v in PUBLISHED_BG.items():
            assert fitted["bg_nbd"][k] == pytest.approx(v, rel=2e-3), k
        for k, v in PUBLISHED_GG.items():
            assert fitted["gamma_gamma"][k] == pytest.approx(v, rel=2e-3), k

        # the model reaches every worker; predictions as of the stream's clock (the last order day)
        in_force = wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(
            http_get(workers[1].url + "/predict/model")), 60, "the model on the second worker")
        assert in_force["bg_nbd"] == fitted["bg_nbd"]
        model = fitted["bg_nbd"]
        params = (model["r"], model["alpha"], model["a"], model["b"])
        history: dict[str, list[int]] = {}
        for cid, day, _ in cdnow_sample():
            history.setdefault(cid, []).append(day)
        last_day = max(day for _, day, _ in cdnow_sample())
        sample = random.Random(16).sample(sorted(history), 25)
        for cid in sample:
            days = sorted(set(history[cid]))
            x, tx, T = len(days) - 1, (days[-1] - days[0]) / 7, (last_day - days[0]) / 7
            worker = workers[int(cid) % 2]

            def seen(cid: str = cid, worker: Any = worker) -> Any:
                status, body = worker.profile("user_id", f"cdnow-{cid}")
                view = body.get("predictions") if status == 200 else None
                return view if view and "p_alive" in view and view["as_of"].startswith(
                    str(EPOCH + timedelta(days=last_day))) else None

            view = wait_for(seen, 120, f"predictions of customer {cid}")
            assert (view["frequency"], view["recency"], view["age"]) == (
                x, pytest.approx(tx), pytest.approx(T)), cid
            assert view["p_alive"] == pytest.approx(independent_p_alive(*params, x, tx, T), rel=1e-9)
            assert view["expected_orders_90d"] == pytest.approx(
                independent_expected(*params, 90 / 7, x, tx, T), rel=1e-6)

        # a segment on p_alive: its size equals the customers the formula puts in it
        def churning_at(day: int) -> int:
            return sum(1 for days in map(sorted, map(set, history.values()))
                       if independent_p_alive(*params, len(days) - 1, (days[-1] - days[0]) / 7,
                                              (day - days[0]) / 7) < 0.3)

        want = churning_at(last_day)
        req = orjson.dumps({"condition": {"computed": "p_alive", "lt": 0.3}})
        put = urllib.request.Request(workers[0].url + "/segments/churning", data=req, method="PUT",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(put, timeout=30) as resp:
            assert resp.status == 200

        def size() -> Any:
            status, body = http_get(workers[1].url + "/segments/churning/size")
            return body if status == 200 and body["complete"] and body["size"] == want else None

        wait_for(size, 180, f"segment churning with {want} members")
        assert 0 < want < 2357

        # time passes (the event-time clock moves with another person's page view 90 days
        # later): customers cross p_alive < 0.3 on their own day, with no event of theirs
        later = last_day + 90
        status, body = collector.post("/v1/page", orjson.dumps({
            "userId": "someone-else", "name": "Home", "messageId": "clock-1",
            "timestamp": iso_day(later, 12)}), WRITE_KEY)
        assert status == 200, body
        want = churning_at(later)
        wait_for(size, 180, f"segment churning with {want} members 90 days later")
        assert want > churning_at(last_day)
    finally:
        collector.stop()
        deployment.stop()
