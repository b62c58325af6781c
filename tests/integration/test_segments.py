"""Computed traits and segments on real workers, judged against an independent computation.

A purchase history (several hundred customers, a year and more of orders,
refunds, carts and views) is replayed with the event-time clock. At the end,
every customer's computed traits and segment memberships must equal what a
plain computation over the same records gives at the replay's last instant;
a segment applied afterwards must backfill to its independently computed
membership; and the transition records must account for every membership.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import TuskEnv
from tests.integration.harness import Deployment

pytestmark = pytest.mark.kafka

DAY = 86_400_000
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "shop.yaml"
START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def purchase_history(customers: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for c in range(customers):
        user = f"cust-{c}"
        loyal = c % 3 == 0  # a third keep buying often until the end of the history
        active_until = START + (480 if loyal else rng.randint(30, 480)) * DAY
        t = START + rng.randint(0, 60) * DAY
        out.append({"type": "identify", "userId": user, "timestamp": iso(t),
                    "traits": {"email": f"cust{c}@shop.example", "plan": rng.choice(["free", "pro"])}})
        while t < active_until:
            t += rng.randint(1, 12 if loyal else 40) * DAY + rng.randint(0, DAY - 1)
            kind = rng.random()
            if kind < 0.45:
                out.append({"type": "track", "event": "Order Completed", "userId": user, "timestamp": iso(t),
                            "properties": {"revenue": round(rng.uniform(5, 400), 2), "currency": "EUR"}})
            elif kind < 0.55:
                out.append({"type": "track", "event": "Order Refunded", "userId": user, "timestamp": iso(t),
                            "properties": {"total": round(rng.uniform(5, 100), 2)}})
            elif kind < 0.75:
                out.append({"type": "track", "event": "Checkout Started", "userId": user,
                            "timestamp": iso(t)})
            else:
                out.append({"type": "track", "event": "Product Viewed", "userId": user, "timestamp": iso(t),
                            "properties": {"category": rng.choice(["shoes", "hats", "bags"])}})
    for i, e in enumerate(out):
        e["messageId"] = f"h{seed}-{i}"
    rng.shuffle(out)  # per-customer order is not guaranteed either
    return out


def ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def expected(history: list[dict[str, Any]]) -> tuple[int, dict[str, dict[str, Any]]]:
    now = max(ms(e["timestamp"]) for e in history)
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in history:
        by[e["userId"]].append(e)
    out: dict[str, dict[str, Any]] = {}
    for user, evs in by.items():
        orders = [(ms(e["timestamp"]), e["properties"]["revenue"]) for e in evs
                  if e.get("event") == "Order Completed"]
        refunds = [e["properties"]["total"] for e in evs if e.get("event") == "Order Refunded"]
        checkouts = [ms(e["timestamp"]) for e in evs if e.get("event") == "Checkout Started"]
        ltv = sum(r for _, r in orders) - sum(refunds)
        last = max((t for t, _ in orders), default=None)
        o30 = sum(1 for t, _ in orders if now - 30 * DAY <= t <= now)
        o90 = sum(1 for t, _ in orders if now - 90 * DAY <= t <= now)
        days = None if last is None else (now - last) // DAY
        last_checkout = max(checkouts, default=None)
        segs = set()
        if ltv >= 500 and o90 >= 2:
            segs.add("vip")
        if orders and o30 == 0:
            segs.add("lapsed")
            if ltv >= 500:
                segs.add("lapsed_vip")
        if last_checkout is not None and last_checkout < now - 3_600_000 and not any(
                t > last_checkout for t, _ in orders):
            segs.add("cart_abandoned")
        if o30 >= 2:
            segs.add("frequent_buyers")
        if days is not None and 60 <= days < 180:
            segs.add("at_risk")
        out[user] = {"ltv": ltv, "orders_count": len(orders), "orders_30d": o30,
                     "days_since_last_order": days, "segments": segs,
                     "big_spender": ltv >= 1000}
    return now, out


def put(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="PUT",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def test_replayed_history_matches_an_independent_computation(tusk_env: TuskEnv, tmp_path: Path) -> None:
    env = {**tusk_env, "TUSK_CLOCK": "event", "TUSK_TICK_INTERVAL": "300ms", "TUSK_PARTITIONS": "4"}
    d = Deployment(env, tmp_path)
    cli = [sys.executable, "-m", "stream.cli.commands", "segments"]
    done = subprocess.run([*cli, "apply", str(EXAMPLES), "--no-wait"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    history = purchase_history(250, seed=11)
    now, want = expected(history)
    try:
        w0, _w1 = d.add_worker(), d.add_worker()
        d.produce([orjson.dumps(e) for e in history])
        d.wait_accounted(len(history), timeout=240)

        def mismatches() -> list[str]:
            bad = []
            for user, exp in want.items():
                status, p = w0.profile("user_id", user)
                if status != 200:
                    bad.append(f"{user}: HTTP {status}")
                    continue
                c = p["computed"]
                for name in ("orders_count", "orders_30d", "days_since_last_order"):
                    if c[name] != exp[name]:
                        bad.append(f"{user}: {name} {c[name]} != {exp[name]}")
                if abs(c["ltv"] - exp["ltv"]) > 1e-6:
                    bad.append(f"{user}: ltv {c['ltv']} != {exp['ltv']}")
                if set(p["segments"]) != exp["segments"]:
                    bad.append(f"{user}: segments {sorted(p['segments'])} != {sorted(exp['segments'])}")
            return bad

        deadline = time.monotonic() + 90
        while (bad := mismatches()) and time.monotonic() < deadline:
            time.sleep(2)
        assert not bad, bad[:10]

        # sizes across both workers
        for seg in ("vip", "lapsed", "cart_abandoned", "at_risk"):
            status, body = w0.get(f"/segments/{seg}/size")
            assert status == 200 and body["workers"] == 2
            assert body["size"] == sum(seg in e["segments"] for e in want.values()), seg

        # a segment applied after the replay backfills to the same membership
        status, body = put(f"{w0.url}/segments/big_spender",
                           {"name": "net LTV of 1000 or more", "condition": {"computed": "ltv", "gte": 1000}})
        assert status == 200, body
        deadline = time.monotonic() + 90
        size = -1
        while time.monotonic() < deadline:
            status, body = w0.get("/segments/big_spender/size")
            size = body.get("size", -1) if status == 200 else -1
            if status == 200 and body["complete"] and size == sum(e["big_spender"] for e in want.values()):
                break
            time.sleep(1)
        assert size == sum(e["big_spender"] for e in want.values())
        for user, exp in want.items():
            _, p = w0.profile("user_id", user)
            assert ("big_spender" in p["segments"]) == exp["big_spender"], user

        # a bad definition is refused with the path of the bad node
        status, body = put(f"{w0.url}/segments/broken", {"condition": {"all": [{"trait": "x", "gt": []}]}})
        assert status == 422 and "condition.all[0].gt" in body["message"], body

        # every membership is the sum of its transitions: entries − exits ∈ {0, 1}, = membership
        net: dict[tuple[str, str], int] = defaultdict(int)
        for rec in d.read(d.settings.topics.profile_changes):
            change = orjson.loads(rec.value())
            if change.get("type") == "segment":
                step = 1 if change["transition"] == "entered" else -1
                net[(change["profile_id"], change["segment"])] += step
        for user in want:
            _, p = w0.profile("user_id", user)
            for seg in ("vip", "lapsed", "cart_abandoned", "frequent_buyers", "at_risk", "big_spender"):
                assert net[(p["id"], seg)] == (1 if seg in p["segments"] else 0), (user, seg)
        listing = subprocess.run([*cli, "list", "--url", w0.url], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert listing.returncode == 0 and "big_spender" in listing.stdout, listing.stderr
    finally:
        d.stop()
