"""Erasure reaches the disk: nothing of an erased person is left in the broker's log files (but
the raw input topic) nor in any worker's RocksDB files (actives, standbys, and the folders of
partitions that moved away) once TUSK_ERASE_WITHIN has passed.

The test starts its own broker with the project's launcher, because the log cleaner's and the
retention checker's broker-level timings decide how soon Kafka acts on the topics' configs
(stream/kafka/topic_configs.py); in production they are minutes against days. It greps raw bytes, so
it also checks that the same grep does find a person who was not erased (a check that could
not fail otherwise, e.g. if the files were compressed).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.demo.session import load_launcher
from tests.integration.harness import Deployment, wait_for

pytestmark = pytest.mark.kafka

ERASE_WITHIN_S = 16

DEFINITIONS = """
segments:
  - id: buyers
    condition: {performed: Order Completed}
    destinations:
      - {channel: email, traits: [first_name, last_name]}
      - {channel: ads}
      - {channel: webhook, traits: [first_name, title]}
"""


def ev(mid: str, **fields: Any) -> bytes:
    return orjson.dumps({"messageId": mid, **fields})


def person(tag: str, first: str, last: str, email: str, phone: str) -> tuple[list[bytes], dict[str, bytes]]:
    """Events of one person on two devices (merged by a login), with consent, orders, a group
    call and triggers; and every identifier and trait of theirs that must not outlive erasure."""
    anon1, anon2 = f"anon-{tag}-k3x9q", f"anon-{tag}-w7m2v"
    dev1, dev2 = f"device-{tag}-4471", f"device-{tag}-8823"
    user, order, title = f"user-{tag}-5150", f"order-{tag}-90210", f"Chief {tag} Officer"
    consent = {"consent": {"categoryPreferences": {"Marketing": True, "Advertising": True}}}
    events = [
        ev(f"{tag}1", type="page", anonymousId=anon1, name="Home", context={"device": {"id": dev1}}),
        ev(f"{tag}2", type="page", anonymousId=anon2, name="Shoes", context={"device": {"id": dev2}}),
        ev(f"{tag}3", type="identify", anonymousId=anon1, userId=user,
           traits={"email": email, "phone": phone, "first_name": first, "last_name": last,
                   "subscriptions": {"email": "subscribed"}},
           context={"device": {"id": dev1}, **consent}),
        ev(f"{tag}4", type="identify", anonymousId=anon2, userId=user, context={"device": {"id": dev2}}),
        ev(f"{tag}5", type="group", userId=user, groupId=f"acct-{tag}",
           traits={"name": "Shared Account Ltd", "title": title}),
        ev(f"{tag}6", type="track", userId=user, event="Order Completed",
           properties={"order_id": order, "revenue": 42.5}),
    ]
    secrets = {"user_id": user, "email": email, "phone": phone, "phone_digits": phone.lstrip("+"),
               "anonymous_id_1": anon1, "anonymous_id_2": anon2, "device_id_1": dev1, "device_id_2": dev2,
               "first_name": first, "last_name": last, "order_id": order, "title": title,
               "email_sha256": hashlib.sha256(email.encode()).hexdigest()}
    return events, {k: v.encode() for k, v in secrets.items()}


def grep(folder: Path, secrets: dict[str, bytes], skip: str | None = None) -> dict[str, list[str]]:
    """secret name → files (relative) holding its bytes; `skip`: a top-level folder prefix."""
    hits: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or (skip and rel.parts[0].startswith(skip)):
            continue
        try:
            data = path.read_bytes()
        except (FileNotFoundError, PermissionError):  # deleted under us: gone is fine
            continue
        for name, secret in secrets.items():
            if secret in data:
                hits.setdefault(name, []).append(str(rel))
    return hits


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    launcher = load_launcher()
    broker = launcher.start(port=launcher.free_port(), workdir=tmp_path / "kafka", properties={
        "log.cleaner.backoff.ms": "200",              # the cleaner looks for work every 200 ms
        "log.cleaner.min.cleanable.ratio": "0.01",
        "log.retention.check.interval.ms": "500",     # retention checked every 500 ms
        "log.initial.task.delay.ms": "0",
        "log.segment.delete.delay.ms": "0",           # deleted/cleaned segments' files go at once
        "log.cleaner.threads": "1",
    })
    try:
        yield broker.bootstrap, tmp_path / "kafka" / "data"
    finally:
        broker.stop()


# without standbys (copies left behind by moved partitions): in `make test-slow` only
@pytest.mark.parametrize("standbys", [pytest.param("0", marks=pytest.mark.slow), "1"])
def test_erased_person_leaves_no_byte_on_broker_or_worker_disks(own_broker: tuple[str, Path], tmp_path: Path,
                                                                standbys: str) -> None:
    bootstrap, data = own_broker
    run = f"e{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "TUSK_TOPIC_PREFIX": f"{run}.", "TUSK_APP_ID": run, "TUSK_PARTITIONS": "2",
           "TUSK_STANDBY_REPLICAS": standbys, "TUSK_ERASE_WITHIN": f"{ERASE_WITHIN_S}s",
           # the identity protocol's topic: the whole window (workers must not lag behind its
           # retention, and three joining workers rebalance on a busy test machine)
           "TUSK_INTERNAL_RETENTION": f"{ERASE_WITHIN_S}s",
           "TUSK_LOG_LEVEL": "info"}
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFINITIONS)
    cli = [sys.executable, "-m", "stream.cli.commands"]
    done = subprocess.run([*cli, "segments", "apply", str(defs), "--no-wait"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    gone_events, gone = person("zq", "Zelphinia", "Quillbrook", "zelphinia.q@example.org", "+14155550188")
    kept_events, kept = person("kv", "Korvalda", "Vintermoss", "korvalda.v@example.org", "+14155550177")
    d = Deployment(env, tmp_path)
    try:
        workers = [d.add_worker()]
        d.produce(gone_events[:3] + kept_events[:3])
        d.wait_accounted(6)
        d.produce(gone_events[3:] + kept_events[3:])
        d.wait_accounted(12)

        def triggers() -> dict[str, list[dict[str, Any]]]:
            return {ch: [orjson.loads(r.value()) for r in d.read(d.settings.topics.activations(ch))]
                    for ch in ("email", "ads", "webhook")}

        # (read at once: the activation topics keep records TUSK_ERASE_WITHIN only)
        got = wait_for(lambda: (t := triggers()) and all(len(v) == 2 for v in t.values()) and t, 90,
                       "an email, ads and webhook trigger for each person")
        ads = [t for t in got["ads"] if t["hashed"]["email_sha256"] == gone["email_sha256"].decode()]
        assert len(ads) == 1 and ads[0]["to"] == {}
        status, profile = workers[0].profile("anonymous_id", gone["anonymous_id_2"].decode())
        assert status == 200, profile
        assert sorted(profile["identities"]["anonymous_id"]) == [gone["anonymous_id_1"].decode(),
                                                                 gone["anonymous_id_2"].decode()]
        assert [m["group_id"] for m in profile["memberships"]] == ["acct-zq"]
        assert profile["consent"] == {"Marketing": True, "Advertising": True}
        pid = profile["id"]
        secrets = {**gone, "profile_id": pid.encode()}
        # the grep finds what is there: both people are on both disks before the erasure
        assert set(grep(data, secrets, skip=f"{run}.touchpoints")) == set(secrets)
        # (RocksDB compresses its SST files and shares key prefixes: a grep sees some values only)
        assert set(grep(workers[0].datadir, kept)) >= {"user_id", "email"}
        # two more workers: partitions move (without standbys, a copy is left behind on the first
        # worker's disk), or standbys hold copies of their own
        workers += [d.add_worker(), d.add_worker()]
        d.wait_balanced(180)  # three workers, and standbys, on a loaded machine: rebalances take a while

        out = subprocess.run([*cli, "privacy", "erase", "email:Zelphinia.Q@example.org", "--timeout", "120"],
                             env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        result = orjson.loads(out.stdout)
        assert result["status"] == "done" and result["identifiers"] == 7, result
        salted = hashlib.sha256(b"tusk-erased-v1" + b"email:zelphinia.q@example.org").hexdigest()
        assert result["identifier_sha256"] == salted and "profile_id" not in result
        assert not any(s in out.stdout.encode() for s in secrets.values())
        erased_at = time.monotonic()
        for kind, key in (("user_id", "user_id"), ("email", "email"), ("anonymous_id", "anonymous_id_1"),
                          ("device_id", "device_id_2"), ("phone", "phone")):
            assert workers[0].profile(kind, gone[key].decode())[0] == 404, kind

        def leftovers() -> dict[str, list[str]]:
            found = grep(data, secrets, skip=f"{run}.touchpoints")
            for w in workers:
                for name, files in grep(w.datadir, secrets).items():
                    found.setdefault(name, []).extend(f"{w.datadir.name}/{f}" for f in files)
            return found

        # TUSK_ERASE_WITHIN, and as much again for the broker's retention checks, the cleaner's
        # back-off and a loaded test machine
        deadline = erased_at + ERASE_WITHIN_S * 2 + 30
        while (left := leftovers()) and time.monotonic() < deadline:
            time.sleep(1)
        assert not left, left
        print(f"nothing left {time.monotonic() - erased_at:.1f} s after the erasure")
        # what was erased is still in the raw input, and the other person is everywhere still
        assert set(grep(data, {"email": gone["email"]})) == {"email"}
        assert set(grep(data, kept, skip=f"{run}.touchpoints")) >= {"user_id", "email", "first_name",
                                                                    "anonymous_id_1", "order_id"}
        status, other = workers[1].profile("email", kept["email"].decode())
        assert status == 200 and other["traits"]["first_name"] == "Korvalda"
        for w in workers:
            w.stop()
        # stopped workers: the files as they are left on disk (WAL, MANIFEST, SST)
        for w in workers:
            assert not grep(w.datadir, secrets), w.datadir
        assert set().union(*(grep(w.datadir, kept) for w in workers))  # the other person is there
    finally:
        d.stop()
