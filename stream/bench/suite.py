"""`make bench`: one run, one machine, every figure side by side, printed as JSON.

    python -m stream.bench.suite [--profiles 100000] [--window 60]

The input (stream.demo.synthetic's shop stream: identifies, page views, carts,
orders, refunds; about 10 events per person) is produced once to a topic and
read by each contender from the start:
  bare    a Faust agent that only counts events (the ceiling), stock and with
          Tusk's drain adapter (stream/runtime/faust_adapter.py)
  naive   a Faust agent doing one table read + JSON update + write per event
  tusk    `tusk worker`: validation, identity, profile, 50 segments, triggers,
          with 1 and with 2 workers, and with 0 segments
and, on a real purchase log (CDNOW, stream/bench/purchases.py) with shop.yaml's traits and
segments and the event clock, stock bare Faust against one tusk worker (the ratio target).
Throughput is measured over a fixed window of a backlog (`--window` seconds
after the first event), so slow contenders do not stretch the run. Then:
latency event → trigger at a fixed offered load, worker RSS as profiles
accumulate, and the seconds a fresh replica needs to restore the state.
Progress goes to stderr, the JSON to stdout and .tusk/bench/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from confluent_kafka import TopicPartition

from processors.segments.catalog import Catalog
from processors.segments.definitions import load_file
from stream.bench import processors
from stream.bench.cpu import CpuMeter
from stream.bench.purchases import cdnow_events
from stream.bench.seed import seed
from stream.bench.segments import EXAMPLES
from stream.cli.commands import http_get
from stream.demo.session import free_port, group_split, load_launcher, metrics, stop_process, wait_healthy
from stream.demo.synthetic import shop_stream
from stream.ingest.produce import produce_lines
from stream.kafka.clients import ensure_topic, ensure_topics, producer, reader
from stream.runtime import variables
from stream.runtime.definitions import produce_definition
from stream.runtime.settings import Settings

TARGETS = {"events_per_s_per_worker": 3_000, "events_per_s_per_worker_goal": 10_000, "ratio_to_bare": 0.6,
           "p99_ms": 100, "p99_ms_at_250": 50, "rss_mb": 400, "restore_s": 120}
MIN_POLL_S = 0.001
"""librdkafka's shortest wait: its timeouts are whole milliseconds, and a shorter one returns at
once (measured: poll(0.0009) 0 ms, poll(0.001) 1.1 ms)."""


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


class Run:
    """An isolated deployment: own topic prefix, app id and folders."""

    def __init__(self, bootstrap: str, base: Path, partitions: int, **extra: str) -> None:
        self.id = f"b{uuid.uuid4().hex[:8]}"
        self.base = base / self.id
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TUSK_TOPIC_PREFIX": f"{self.id}.",
                    "TUSK_APP_ID": self.id, "TUSK_PARTITIONS": str(partitions), "TUSK_LOG_LEVEL": "warn",
                    **extra}
        self.settings = Settings.from_env(self.env)
        self.procs: list[tuple[subprocess.Popen[bytes], str]] = []

    def start(self, argv: list[str], name: str, wait: bool = True,
              extra: dict[str, str] | None = None) -> tuple[Any, str]:
        port = free_port()
        env = {**self.env, "TUSK_WEB_PORT": str(port), "TUSK_DATADIR": str(self.base / name), **(extra or {})}
        self.base.mkdir(parents=True, exist_ok=True)
        log = self.base / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", *argv], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        if wait:
            wait_healthy(url, proc, log, timeout=180)
        self.procs.append((proc, url))
        return proc, url

    def stop(self) -> None:
        for proc, _ in self.procs:
            stop_process(proc)


def copy_input(run: Run, lines: list[bytes]) -> None:
    counts = produce_lines(run.settings, lines, run.settings.topics.touchpoints)
    assert counts["failed"] == 0, counts


def processed(url: str) -> float:
    m = metrics(url)
    return sum(v for k, v in m.items() if k.startswith(("tusk_events_processed_total",
                                                          "tusk_events_rejected_total")))


def rate_over(read: Any, window: float, total: int) -> dict[str, Any]:
    """events/s from the first event seen, over `window` seconds or until `total` is reached."""
    while read() == 0:
        time.sleep(0.2)
    start_n, start_t = read(), time.monotonic()
    while time.monotonic() - start_t < window:
        n = read()
        if n >= total:
            break
        time.sleep(0.5)
    n, t = read(), time.monotonic()
    return {"events_per_s": round((n - start_n) / (t - start_t)), "events_measured": int(n - start_n),
            "seconds": round(t - start_t, 1)}


def baseline(bootstrap: str, base: Path, lines: list[bytes], mode: str, window: float,
             partitions: int) -> dict[str, Any]:
    run = Run(bootstrap, base, partitions)
    ensure_topic(run.settings, run.settings.topics.touchpoints)
    copy_input(run, lines)
    progress = run.base / "progress"
    run.base.mkdir(parents=True, exist_ok=True)
    run.start(["stream.bench.apps", mode, run.settings.topics.touchpoints], mode, wait=False,
              extra={"BENCH_PROGRESS": str(progress)})

    def read() -> float:
        try:
            return float(progress.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
    try:
        return rate_over(read, window, len(lines))
    finally:
        run.stop()


def apply_segments(run: Run, count: int) -> None:
    produce_definitions(run, *processors.shop_definitions(count))


def produce_definitions(run: Run, traits: list[dict[str, Any]], segments: list[dict[str, Any]]) -> None:
    for spec in traits:
        produce_definition(run.settings, "computed_trait", spec["id"], spec)
    for spec in segments:
        produce_definition(run.settings, "segment", spec["id"], spec)


def tusk(bootstrap: str, base: Path, lines: list[bytes], workers: int, segments: int, window: float,
         partitions: int) -> tuple[dict[str, Any], Run]:
    run = Run(bootstrap, base, partitions)
    ensure_topics(run.settings)
    apply_segments(run, segments)
    copy_input(run, lines)
    urls = [run.start(["stream.cli.commands", "worker"], f"worker{i}")[1] for i in range(workers)]
    result = rate_over(lambda: sum(processed(u) for u in urls), window, len(lines))
    result["rss_mb"] = [round(metrics(u).get("process_resident_memory_bytes", 0) / 1e6) for u in urls]
    result["profiles_created"] = int(sum(metrics(u).get("tusk_profiles_created_total", 0) for u in urls))
    return result, run


def purchase_log(bootstrap: str, base: Path, window: float, partitions: int) -> dict[str, Any]:
    """A real purchase log (CDNOW, stream/bench/purchases.py) with shop.yaml's computed traits
    and segments, event clock: stock bare Faust and one tusk worker on the same backlog."""
    lines = cdnow_events()
    out: dict[str, Any] = {"input": {"log": "CDNOW master (lifetimes package)", "events": len(lines)}}
    out["bare_faust"] = baseline(bootstrap, base, lines, "bare", window, partitions)
    run = Run(bootstrap, base, partitions, TUSK_CLOCK="event")
    ensure_topics(run.settings)
    traits, segments = load_file(EXAMPLES)
    produce_definitions(run, traits, segments)
    copy_input(run, lines)
    url = run.start(["stream.cli.commands", "worker"], "worker0")[1]
    try:
        out["tusk_1_worker"] = rate_over(lambda: processed(url), window, len(lines))
    finally:
        run.stop()
    out["ratio_to_bare"] = round(out["tusk_1_worker"]["events_per_s"]
                                 / max(1, out["bare_faust"]["events_per_s"]), 3)
    # the ceiling of this ratio: the same events through the processors alone, in this process
    out["processors_alone"] = processors.measure(lines, Catalog.build(traits, segments), "event")
    out["processors_alone_to_bare"] = round(out["processors_alone"]["events_per_s"]
                                            / max(1, out["bare_faust"]["events_per_s"]), 3)
    return out


def pace(due: float, poll: Callable[[float], Any], clock: Callable[[], float] = time.monotonic) -> None:
    """Hand the time until `due` (monotonic) to `poll`, never less than MIN_POLL_S at a time.

    Waiting exactly what is left spun: at 2k/s a ping is due every 0.5 ms, librdkafka returned at
    once from each sub-millisecond poll, and the driver's main thread took 19.6 CPU s of a 50 s
    run, a core taken from the workers on a 2-core machine. Now a ping due sooner than 1 ms away
    goes up to 1 ms late with the others then due; each is stamped when it is sent."""
    while (left := due - clock()) > 0:
        poll(max(left, MIN_POLL_S))


def latency(bootstrap: str, base: Path, rate: int, seconds: float, partitions: int,
            workers: int, warmup: float = 10.0, broker_pid: int | None = None) -> dict[str, Any]:
    """Each ping is a new person entering a segment with a webhook destination: one trigger each.

    Pings start once the workers have split the partitions between them. The first `warmup`
    seconds of pings (same rate) are reported apart (`warmup_p99_ms`), not in the p50-p99: a run's
    topics are new, and the broker's first writes into them cost it seconds of kernel time
    (measured: 0.5-1.7 s of system CPU per second in its request handlers and ~100 major page
    faults over the first 3 s of pings, then ~0.2 s per second), which is not the steady state a
    p99 describes.

    The CPU the measured pings cost (`cpu_us_per_event`: the workers, the broker when its process
    is known, this driver; `cores_busy`) is read from /proc, from the first measured ping until the
    last trigger came."""
    run = Run(bootstrap, base, partitions)
    ensure_topics(run.settings)
    produce_definition(run.settings, "segment", "pinged", {
        "id": "pinged", "condition": {"performed": "Bench Ping"}, "destinations": [{"channel": "webhook"}]})
    topic = run.settings.topics.activations("webhook")
    ensure_topic(run.settings, topic)
    urls = [run.start(["stream.cli.commands", "worker"], f"worker{i}")[1] for i in range(workers)]
    until_serving_all(urls, partitions)
    consumer = reader(run.settings, f"{run.id}-lat", **{"auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    prod = producer(run.settings, **{"linger.ms": 1})
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    skip = int(rate * warmup)
    n = skip + int(rate * seconds)
    meter = CpuMeter({"workers": [proc.pid for proc, _ in run.procs],
                      "broker": [broker_pid] if broker_pid else [], "driver": [os.getpid()]})

    def arrived(msg: Any) -> None:
        if msg is not None and msg.error() is None:
            got.setdefault(orjson.loads(msg.value() or b"{}").get("caused_by", ""), time.time())

    started = time.monotonic()
    for i in range(n):
        if i == skip:
            meter.start()
        due = started + i / rate
        # wait for the next send in the trigger consumer's poll, which returns as soon as a
        # trigger arrives: no spinning, so the driver leaves the two cores to the workers
        pace(due, lambda wait: arrived(consumer.poll(wait)))
        mid = f"ping-{i}"
        sent[mid] = time.time()
        # keyed as tusk produce and the collector key events: by the routing identifier
        prod.produce(run.settings.topics.touchpoints, key=f"user_id:pinger-{i}".encode(), value=orjson.dumps(
            {"type": "track", "event": "Bench Ping", "userId": f"pinger-{i}", "messageId": mid}))
        prod.poll(0)
    deadline = time.monotonic() + 120
    while len(got) < n and time.monotonic() < deadline:
        # poll, not consume(500, timeout): consume returns after its timeout unless 500 messages
        # came, so the last pings' triggers were stamped up to 0.5 s after they arrived (and no
        # flush first: librdkafka sends in its own threads, and a flush would hold the stamping)
        arrived(consumer.poll(0.5))
    cpu = meter.stop(n - skip)
    prod.flush(30)
    consumer.close()
    run.stop()

    def millis(pings: range) -> list[float]:
        return sorted((got[m] - sent[m]) * 1000 for m in (f"ping-{i}" for i in pings) if m in got)
    lat, early = millis(range(skip, n)), millis(range(skip))
    if not lat:
        return {"offered_per_s": rate, "triggers": 0}

    def pct(xs: list[float], p: float) -> float | None:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 1) if xs else None
    return {"offered_per_s": rate, "workers": workers, "warmup_s": warmup, "events": n - skip,
            "triggers": len(lat), "p50_ms": pct(lat, 0.5),
            "p95_ms": pct(lat, 0.95), "p99_ms": pct(lat, 0.99), "warmup_p99_ms": pct(early, 0.99), **cpu}


def until_serving_all(urls: list[str], partitions: int, timeout: float = 900) -> None:
    """Until the workers at `urls` have recovered and split every partition between them
    (`group_split`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if group_split([http_get(url + "/health") for url in urls], partitions) is not None:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{urls} did not serve all {partitions} partitions in {timeout:.0f}s")


def rss_mb(url: str) -> int:
    return round(metrics(url).get("process_resident_memory_bytes", 0) / 1e6)


def failover(run: Run, standby: bool) -> float:
    """Seconds until the survivor of two workers serves every partition after the other's kill -9."""
    extra = {"TUSK_STANDBY_REPLICAS": "1" if standby else "0"}
    tag = "standby" if standby else "plain"
    # restoring a large state takes longer than a start-up: wait for it below, not in start()
    _, url = run.start(["stream.cli.commands", "worker"], f"{tag}-a-{uuid.uuid4().hex[:4]}", wait=False,
                       extra=extra)
    b, url_b = run.start(["stream.cli.commands", "worker"], f"{tag}-b-{uuid.uuid4().hex[:4]}", wait=False,
                         extra=extra)
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:  # both serve their half; standbys have caught up
        try:
            health = [http_get(u + "/health") for u in (url, url_b)]
            halves = [len(body.get("partitions", [])) if status == 200 else 0 for status, body in health]
            standby_left = sum(metrics(u).get("tusk_recovery_standby_remaining_records", 0)
                               for u in (url, url_b))
        except Exception:  # still starting
            halves, standby_left = [0, 0], 1
        if all(halves) and sum(halves) == run.settings.partitions and standby_left <= 10:
            break
        time.sleep(2)
    time.sleep(5)
    started = time.monotonic()
    os.killpg(b.pid, 9)
    until_serving_all([url], run.settings.partitions)
    seconds = round(time.monotonic() - started, 1)
    run.stop()
    run.procs.clear()
    return seconds


def state_at_scale(bootstrap: str, base: Path, count: int, lines: list[bytes], window: float,
                   partitions: int, failovers: bool) -> dict[str, Any]:
    """`count` profiles in the changelogs: restore time, lookups, memory, then events on top."""
    run = Run(bootstrap, base, partitions)
    ensure_topics(run.settings)
    apply_segments(run, 50)
    started = time.monotonic()
    out: dict[str, Any] = {"seeded": seed(run.settings, count)}
    out["seed_s"] = round(time.monotonic() - started, 1)
    say(f"{count} profiles seeded in {out['seed_s']} s; a fresh replica restores them…")
    started = time.monotonic()
    _, url = run.start(["stream.cli.commands", "worker"], "fresh", wait=False)
    until_serving_all([url], partitions, timeout=1800)
    out["restore_s"] = round(time.monotonic() - started, 1)
    out["rss_mb_after_restore"] = rss_mb(url)
    probes = [f"seed-{i}" for i in (0, count // 2, count - 1)]
    out["lookups_ok"] = all(http_get(f"{url}/profiles/user_id/{u}")[0] == 200 for u in probes)
    copy_input(run, lines)
    out["events_on_top"] = rate_over(lambda: processed(url), window, len(lines))
    out["rss_mb_after_events"] = rss_mb(url)
    out["profiles_stored_estimate"] = int(metrics(url).get("tusk_profiles_stored", 0))
    run.stop()
    run.procs.clear()
    if failovers:  # without a standby, a failover is a restore like the one measured above
        say(out, "; failover with a standby replica…")
        out["failover_with_standby_s"] = failover(run, standby=True)
    return out


class Broker(NamedTuple):
    bootstrap: str
    pid: int | None  # None: a broker given by KAFKA_BOOTSTRAP_SERVERS, maybe not on this machine


@contextlib.contextmanager
def local_kafka(base: Path) -> Iterator[Broker]:
    given = variables.given("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield Broker(given, None)
        return
    launcher = load_launcher()
    broker = launcher.start(port=free_port(), workdir=base / "kafka")
    say(f"Kafka {broker.bootstrap}")
    try:
        yield Broker(broker.bootstrap, broker.pid)
    finally:
        broker.stop()


def save(out: dict[str, Any]) -> str:
    """Written after every phase too, so a failing phase does not lose the others' figures."""
    text = json.dumps(out, indent=2)
    Path(".tusk/bench").mkdir(parents=True, exist_ok=True)
    Path(".tusk/bench/latest.json").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench")
    ap.add_argument("--profiles", type=int, default=100_000)
    ap.add_argument("--window", type=float, default=60.0, help="seconds of backlog per throughput figure")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--latency-rate", type=int, default=2000)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--latency-workers", type=int, default=2)
    ap.add_argument("--state", type=lambda v: [int(x) for x in v.split(",")], default=[100_000, 1_000_000],
                    help="profile counts to restore and measure memory at (comma-separated)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tusk-bench-"))
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "targets": TARGETS}
    with local_kafka(base) as broker:
        bootstrap = broker.bootstrap
        say("generating the input…")
        lines = list(shop_stream(args.profiles, seed=11))
        out["input"] = {"profiles": args.profiles, "events": len(lines)}
        say(f"{len(lines)} events; bare Faust agent…")
        out["bare_faust"] = baseline(bootstrap, base, lines, "bare", args.window, args.partitions)
        say(out["bare_faust"], "; bare Faust agent with the drain adapter…")
        out["bare_faust_patched"] = baseline(bootstrap, base, lines, "bare-patched", args.window,
                                             args.partitions)
        say(out["bare_faust_patched"], "; a real purchase log…")
        out["purchase_log"] = purchase_log(bootstrap, base, args.window, args.partitions)
        say(out["purchase_log"], "; naive pipeline…")
        out["naive"] = baseline(bootstrap, base, lines, "naive", args.window, args.partitions)
        say(out["naive"], "; tusk, 0 segments…")
        out["tusk_0_segments"], run = tusk(bootstrap, base, lines, 1, 0, args.window, args.partitions)
        run.stop()
        say(out["tusk_0_segments"], "; tusk, 50 segments, 1 worker…")
        out["tusk_50_segments_1_worker"], run1 = tusk(bootstrap, base, lines, 1, 50, args.window,
                                                      args.partitions)
        run1.stop()
        say(out["tusk_50_segments_1_worker"], "; tusk, 50 segments, 2 workers…")
        out["tusk_50_segments_2_workers"], run2 = tusk(bootstrap, base, lines, 2, 50, args.window,
                                                       args.partitions)
        run2.stop()
        say(out["tusk_50_segments_2_workers"], "; the processors alone, 50 segments…")
        out["processors_alone_50_segments"] = processors.measure(
            lines[:60_000], Catalog.build(*processors.shop_definitions(50)), "wall")
        say(out["processors_alone_50_segments"], "; latency…")
        out["latency"] = latency(bootstrap, base, args.latency_rate, args.latency_seconds, args.partitions,
                                 args.latency_workers, broker_pid=broker.pid)
        say(out["latency"], "; latency below capacity…")
        out["latency_250"] = latency(bootstrap, base, 250, args.latency_seconds, args.partitions,
                                     args.latency_workers, broker_pid=broker.pid)
        say(out["latency_250"])
        save(out)
        out["state"] = {}
        for count in args.state:
            out["state"][str(count)] = state_at_scale(bootstrap, base, count, lines, args.window,
                                                      args.partitions, failovers=count == max(args.state))
            say(out["state"][str(count)])
            save(out)
    full = out["tusk_50_segments_1_worker"]["events_per_s"]
    out["ratios"] = {"tusk_to_bare": round(full / max(1, out["bare_faust"]["events_per_s"]), 3),
                     "tusk_to_naive": round(full / max(1, out["naive"]["events_per_s"]), 3)}
    big = out["state"][str(max(args.state))]
    out["met"] = {
        "events_per_s_per_worker": full >= TARGETS["events_per_s_per_worker"],
        "ratio_to_bare": out["purchase_log"]["ratio_to_bare"] >= TARGETS["ratio_to_bare"],
        "p99_ms": out["latency"].get("p99_ms", 1e9) <= TARGETS["p99_ms"]
        and out["latency"].get("triggers") == out["latency"].get("events"),
        "p99_ms_at_250": out["latency_250"].get("p99_ms", 1e9) <= TARGETS["p99_ms_at_250"]
        and out["latency_250"].get("triggers") == out["latency_250"].get("events"),
        "rss_mb": max(big["rss_mb_after_restore"], big["rss_mb_after_events"]) <= TARGETS["rss_mb"],
        "restore_s": big["restore_s"] <= TARGETS["restore_s"],
    }
    print(save(out))


if __name__ == "__main__":
    main()
