"""Unlink on real workers: a profile glued by one wrong identifier splits back into its people,
equal (identities, event counts, computed traits, segments) to twins that never had the link."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.demo.session import wait_quiet
from tests.conftest import TuskEnv
from tests.integration.harness import Deployment, wait_for

pytestmark = pytest.mark.kafka

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "shop.yaml"
SHARED = "shared-kiosk-7"


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, orjson.loads(resp.read())


def history(tag: str, glued: bool) -> list[dict[str, Any]]:
    """Two people's purchases; with `glued`, some of each person's events carry SHARED."""
    out: list[dict[str, Any]] = []
    for who, orders in (("ann", [120.0, 80.5, 990.0]), ("bob", [15.0, 1200.0])):
        user = f"{who}-{tag}"
        out.append({"type": "identify", "messageId": f"{user}-id", "userId": user,
                    "traits": {"first_name": who.title()}, "timestamp": "2024-03-01T10:00:00Z"})
        for i, revenue in enumerate(orders):
            props = {"revenue": revenue, "order_id": f"{user}-{i}"}
            ev: dict[str, Any] = {"type": "track", "event": "Order Completed", "messageId": f"{user}-o{i}",
                                  "userId": user, "properties": props,
                                  "timestamp": f"2024-03-{2 + i:02d}T12:00:00Z"}
            if glued and i == 0:
                ev["anonymousId"] = SHARED
            out.append(ev)
    return out


def person(p: dict[str, Any], tag: str) -> dict[str, Any]:
    ids = {k: sorted(v.replace(tag, "X") for v in vs) for k, vs in p["identities"].items()}
    return {"identities": ids, "event_count": p["event_count"], "computed": p["computed"],
            "segments": sorted(p["segments"]), "traits": p["traits"]}


@pytest.mark.parametrize("workers", [1, 2])
def test_unlink_gives_back_the_people_a_wrong_identifier_glued(tusk_env: TuskEnv, tmp_path: Path,
                                                               workers: int) -> None:
    env = {**tusk_env, "TUSK_PARTITIONS": "3"}
    cli = [sys.executable, "-m", "stream.cli.commands", "segments", "apply", str(EXAMPLES), "--no-wait"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    d = Deployment(env, tmp_path)
    try:
        for _ in range(workers):
            d.add_worker()
        events = history("g", glued=True) + history("c", glued=False)
        d.wait_accounted(d.produce([orjson.dumps(e) for e in events]), timeout=180)
        wait_quiet(d.totals)
        w = d.workers[-1]
        _, ann = w.profile("user_id", "ann-g")
        _, bob = w.profile("user_id", "bob-g")
        assert ann["id"] == bob["id"] and ann["event_count"] == 7  # glued by the shared device

        status, reply = post(d.workers[0].url + "/identity/unlink", {"identifier": f"anonymous_id:{SHARED}"})
        assert status == 202 and reply["identifier"] == f"anonymous_id:{SHARED}"

        def split() -> bool:
            sa, a = w.profile("user_id", "ann-g")
            sb, b = w.profile("user_id", "bob-g")
            return sa == sb == 200 and a["id"] != b["id"]

        wait_for(split, timeout=90, what="the split")
        wait_quiet(d.totals)

        def equal() -> list[str]:
            bad = []
            for who in ("ann", "bob"):
                _, got = w.profile("user_id", f"{who}-g")
                _, want = w.profile("user_id", f"{who}-c")
                if person(got, "g") != person(want, "c"):
                    bad.append(f"{who}: {person(got, 'g')} != {person(want, 'c')}")
            return bad

        deadline = time.monotonic() + 60
        while (bad := equal()) and time.monotonic() < deadline:
            time.sleep(1)
        assert not bad, bad
        status, _ = w.profile("anonymous_id", SHARED)
        assert status == 404  # unlinked, and blocked
        records = [orjson.loads(m.value()) for m in d.read(d.settings.topics.profile_changes)]
        (rec,) = {orjson.dumps(c) for c in records if c.get("type") == "unlinked"}
        unlinked = orjson.loads(rec)
        assert unlinked["op"] == reply["op"] and unlinked["split"] and unlinked["exact"]
        assert sorted(p["event_count"] for p in unlinked["parts"]) == [3, 4]
        entered = {(c["profile_id"], c["segment"]) for c in records
                   if c.get("type") == "segment" and c.get("reason") == "unlinked"
                   and c["transition"] == "entered"}
        for who in ("ann", "bob"):  # each part entered, with reason unlinked, what the glued one was not in
            _, part = w.profile("user_id", f"{who}-g")
            new = set(part["segments"]) - (set(ann["segments"]) if part["id"] == ann["id"] else set())
            assert {(part["id"], s) for s in new} <= entered, (who, new, entered)
        _, listed = w.get("/identity/quarantine")
        assert SHARED in {r["value"] for r in listed["quarantined"]}
    finally:
        d.stop()
