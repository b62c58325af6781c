"""Real worker processes, real producers and readers, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from stream.cli.commands import http_get
from stream.demo.session import free_port, group_split, metrics, stop_process, wait_healthy
from stream.ingest.produce import produce_lines
from stream.kafka.clients import client_config, ensure_topics, read_topic, watermarks
from stream.runtime.settings import Settings


class Worker:
    """One `tusk worker` process with its own port and RocksDB folder."""

    def __init__(self, env: dict[str, str], name: str, base: Path) -> None:
        self.port = free_port()
        self.datadir = base / name
        self.log = base / f"{name}.log"
        self.env = {**env, "TUSK_WEB_PORT": str(self.port), "TUSK_DATADIR": str(self.datadir)}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Worker:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "stream.cli.commands", "worker"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if wait:
            wait_healthy(self.url, self.proc, self.log, timeout=120)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.url + path)

    def profile(self, kind: str, value: str) -> tuple[int, Any]:
        return self.get(f"/profiles/{kind}/{urllib.parse.quote(value, safe='')}")

    def partitions(self) -> list[int]:
        _, body = self.get("/health")
        return list(body.get("partitions", []))

    def metrics(self) -> dict[str, float]:
        return metrics(self.url)


class Deployment:
    """An isolated Tusk deployment (own topics and group) with N worker processes."""

    def __init__(self, env: dict[str, str], base: Path) -> None:
        self.env = env
        self.base = base
        self.settings = settings_from(env)
        ensure_topics(self.settings)
        self.workers: list[Worker] = []

    def add_worker(self, wait: bool = True) -> Worker:
        w = Worker(self.env, f"worker{len(self.workers)}", self.base)
        self.workers.append(w)
        return w.start(wait)

    def wait_balanced(self, timeout: float = 120.0, quiet: float = 4.0) -> None:
        """Until the live workers have settled: each one recovered (/health 200), the partitions
        split among them (each active on exactly one; every worker owns one when there are as many
        partitions), and that split unchanged for `quiet` seconds (a joining worker may not have
        triggered its rebalance yet)."""
        n = self.settings.partitions
        live = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        seen: list[Any] = [None, 0.0]

        def settled() -> bool:
            now = group_split([w.get("/health") for w in live], n)
            if now is None or now != seen[0]:
                seen[:] = [now, time.monotonic()]
                return False
            return time.monotonic() - seen[1] >= quiet

        wait_for(settled, timeout, f"{n} partitions split among the live workers, all recovered")

    def produce(self, lines: list[bytes]) -> int:
        counts = produce_lines(self.settings, lines, self.settings.topics.touchpoints)
        assert counts["failed"] == 0, counts
        return int(counts["delivered"])

    def totals(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for w in self.workers:
            if w.proc is None or w.proc.poll() is not None:
                continue
            for k, v in w.metrics().items():
                if k.startswith("tusk_"):
                    total[k] = total.get(k, 0.0) + v
        return total

    def wait_accounted(self, expected: int, timeout: float = 120.0) -> dict[str, float]:
        """Until `expected` inputs are each either processed or rejected: counted by the live
        workers, or, when workers were stopped (their counts are gone, what they committed is
        not redelivered), until the group has committed every input offset."""
        deadline = time.monotonic() + timeout
        t: dict[str, float] = {}
        stopped = any(w.proc is None or w.proc.poll() is not None for w in self.workers)
        while time.monotonic() < deadline:
            t = self.totals()
            done = sum(v for k, v in t.items() if k.startswith(("tusk_events_processed_total",
                                                                  "tusk_events_rejected_total")))
            if done >= expected or (stopped and self.inputs_committed()):
                return t
            time.sleep(0.5)
        raise AssertionError(f"only part of {expected} inputs accounted for: {t}")

    def inputs_committed(self) -> bool:
        """The worker group's committed offsets are at the end of every input partition (a
        commit follows the processing: the records were applied or sent to the DLQ)."""
        topic = self.settings.topics.touchpoints
        # asks for the group's offsets without joining it
        consumer = Consumer(client_config(self.settings, **{"group.id": self.settings.app_id,
                                                            "enable.auto.commit": False}))
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            committed = consumer.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
            for tp in committed:
                low, high = watermarks(consumer, topic, tp.partition)
                if high > low and tp.offset < high:
                    return False
            return True
        except KafkaException:
            return False
        finally:
            consumer.close()

    def read(self, topic: str) -> list[Any]:
        return list(read_topic(self.settings, topic, timeout=20))

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def settings_from(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_for(check: Any, timeout: float = 60, what: str = "") -> Any:
    """check()'s first truthy value, polled until `timeout`; else an AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")
