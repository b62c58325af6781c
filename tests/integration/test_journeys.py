"""Journeys on real workers with the event clock, judged against the reference simulation.

Customers' histories (sign-ups, orders, app opens, plan changes, unsubscribes) are replayed;
a worker is killed mid-stream and replaced, and the onboarding journey is edited between the
two halves of the stream. Per customer, the journey step records on
tusk.profile-changes and the triggers on tusk.activations.* must be those of the independent
step-by-step simulation (tests/unit/test_journeys.py), each step once (by its id), and the
live counts of GET /journeys/{id} must add up to the positions the profiles hold.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import TuskEnv
from tests.integration.harness import Deployment, wait_for
from tests.integration.test_segments import put
from tests.unit.test_journeys import DAY, DEFS, EDITED, KINDS, SPEC, T0, Sim, make_events, raw_event

pytestmark = pytest.mark.kafka


def histories(customers: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    out = {}
    for n in range(customers):
        raw = [("Signed Up", rng.randint(0, 3 * DAY), "free")]
        raw += [(rng.choice(KINDS), rng.randint(0, 25 * DAY), rng.choice(["pro", "churned", "free"]))
                for _ in range(rng.randint(0, 8))]
        out[f"c{n}"] = make_events(raw, f"c{n}")
    return out


# the killed run asserts all the undisturbed one does: that one is in `make test-slow` only
@pytest.mark.parametrize("killed", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["worker-killed", "no-failure"])
def test_journeys_on_real_workers_match_the_simulation(tusk_env: TuskEnv, tmp_path: Path,
                                                       killed: bool) -> None:
    env = {**tusk_env, "TUSK_CLOCK": "event", "TUSK_TICK_INTERVAL": "300ms", "TUSK_PARTITIONS": "4"}
    d = Deployment(env, tmp_path)
    defs = tmp_path / "journeys.yaml"
    defs.write_text(DEFS)
    done = subprocess.run([sys.executable, "-m", "stream.cli.commands", "journeys", "apply", str(defs)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    people = histories(40, seed=5)
    split = T0 + 12 * DAY  # the journey is edited once every event up to here is handled
    stream = sorted(((e["ts"], user, e) for user, evs in people.items() for e in evs), key=lambda x: x[:2])
    first = [x for x in stream if x[0] <= split]
    second = [x for x in stream if x[0] > split]
    end1, end = first[-1][0], stream[-1][0]

    def simulate(upto: str) -> dict[str, Sim]:
        """Old definitions up to the last event of the first half (deadlines too), then the edit."""
        sims = {}
        for user, evs in people.items():
            sim = Sim(SPEC)
            sim.run([e for e in evs if e["ts"] <= split], end1)
            if upto == "end":
                sim.journeys = {j["id"]: j for j in EDITED["journeys"]}
                sim.run([e for e in evs if e["ts"] > split], end)
            sims[user] = sim
        return sims

    try:
        w0 = d.add_worker()
        half = len(first) // 2
        d.produce([raw_event(e, user) for _, user, e in first[:half]])
        wait_for(lambda: d.totals().get("tusk_events_in_total", 0) >= half // 2, 120, "some progress")
        if killed:  # mid-stream: what it had not committed is handled again by the next worker
            w0.kill()
            w1 = d.add_worker()
        else:
            w1 = w0
        d.produce([raw_event(e, user) for _, user, e in first[half:]])
        d.wait_accounted(len(first), timeout=240)
        pids = {}
        for user in people:
            status, p = w1.profile("user_id", user)
            assert status == 200, (user, status)
            pids[p["id"]] = user

        def steps_by_user() -> dict[str, list[Any]]:
            seen: set[str] = set()
            got: dict[str, list[Any]] = defaultdict(list)
            for rec in d.read(d.settings.topics.profile_changes):
                c = orjson.loads(rec.value())
                if c.get("type") == "journey" and c["id"] not in seen:
                    seen.add(c["id"])
                    got[pids[c["profile_id"]]].append((c["journey"], c["step"], c["action"], c["at"],
                                                       c["caused_by"]))
            return got

        def mismatches() -> list[str]:
            got = steps_by_user()
            return [u for u in people if sorted(got.get(u, [])) != sorted(want[u].steps)]

        def settled() -> None:
            deadline = time.monotonic() + 90  # the last deadlines fire when the watermark gets there
            while (bad := mismatches()) and time.monotonic() < deadline:
                time.sleep(2)
            assert not bad, [(u, sorted(steps_by_user().get(u, [])), sorted(want[u].steps)) for u in bad[:2]]

        want = simulate("split")
        settled()
        edited = tmp_path / "edited.yaml"
        edited.write_text(orjson.dumps(EDITED).decode())  # JSON is YAML
        done = subprocess.run([sys.executable, "-m", "stream.cli.commands", "journeys", "apply", str(edited)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: any(s["step"] == "wait_1d" for s in w1.get("/journeys/onboarding")[1]["steps_live"]),
                 60, "the edit on the worker")
        d.produce([raw_event(e, user) for _, user, e in second])
        d.wait_accounted(len(stream), timeout=240)
        want = simulate("end")
        settled()
        assert any(r[2] == "exited" and r[1] == "wait_5d" for sim in want.values() for r in sim.steps), \
            "the edit should have moved someone off a removed step"

        # triggers: each (journey, step, cause) once by trigger id, as the simulation sent them
        sent: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
        ids: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
        for channel in ("email", "webhook"):
            for rec in d.read(d.settings.topics.activations(channel)):
                t = orjson.loads(rec.value())
                if "journey" in t:
                    sent[pids[t["profile_id"]]].add((channel, t["journey"], t["step"], t["caused_by"]))
                    ids[t["trigger_id"]].add((t["journey"], t["step"], t["caused_by"]))
        for user, sim in want.items():
            assert sent[user] == {(ch, j, s, c) for ch, j, s, _t, c in sim.sends}, user
        assert all(len(v) == 1 for v in ids.values())
        assert len(ids) == sum(len(sim.sends) for sim in want.values())

        if killed:  # counts are kept apart from the profiles: a crash between the two writes skews them
            return
        # live counts summed over workers equal the positions held
        status, body = w1.get("/journeys/onboarding")
        assert status == 200
        holding = sum(1 for sim in want.values() if sim.pos["onboarding"]["at"] is not None)
        assert body["active"] == holding
        waiting = {s["step"]: s["waiting"] for s in body["steps_live"]}
        for step in ("wait_2d", "wait_open", "wait_1d"):
            assert waiting[step] == sum(sim.pos["onboarding"]["at"] == step for sim in want.values()), step

        # operating it: the CLI and the HTTP errors
        cli = [sys.executable, "-m", "stream.cli.commands", "journeys"]
        listed = subprocess.run([*cli, "list", "--url", w1.url], env=env, capture_output=True, text=True,
                                timeout=60)
        assert listed.returncode == 0 and f"({holding} in it)" in listed.stdout, listed
        shown = subprocess.run([*cli, "show", "onboarding", "--url", w1.url], env=env, capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0 and "wait_1d" in shown.stdout, shown
        refused = subprocess.run([*cli, "delete", "loyalty"], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode == 1 and "target of a move" in refused.stderr, refused
        assert w1.get("/journeys/nope")[0] == 404
        status, body = put(f"{w1.url}/journeys/bad", {"entry": {"event": "X"},
                                                      "steps": [{"id": "a", "wait": "0d"}]})
        assert status == 422 and "steps[0].wait" in body["message"], body
    finally:
        d.stop()
