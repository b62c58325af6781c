#!/usr/bin/env python3
"""A real Apache Kafka (KRaft, one combined broker/controller) on loopback, no Docker.

The jars come from Maven Central through deploy/kafka/pom.xml and are cached in
deploy/kafka/.cache/libs. Usage:

    python deploy/kafka/local_kafka.py up   [--port 19092] [--dir DIR]
    python deploy/kafka/local_kafka.py down [--dir DIR]

`up` waits until the broker answers and prints its bootstrap address. Imported by
the test fixture and by `tusk demo` (start()/stop()).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIBS = HERE / ".cache" / "libs"
DEFAULT_DIR = HERE / ".run"
DEFAULT_PORT = 19092


class LauncherError(RuntimeError):
    """A one-sentence reason the local broker cannot run."""


@dataclass
class LocalKafka:
    bootstrap: str
    workdir: Path
    pid: int

    def stop(self) -> None:
        stop(self.workdir)


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise LauncherError(f"`{tool}` was not found on PATH; {hint}.")
    return path


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise LauncherError(f"could not read the Java version from `java -version`: {out!r}.")
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def ensure_jars() -> Path:
    """Fetch Kafka's jars once (Maven Central), return the folder holding them."""
    if LIBS.is_dir() and any(LIBS.glob("kafka_2.13-*.jar")):
        return LIBS
    mvn = _require("mvn", "install Maven (e.g. `apt-get install maven`) to fetch Kafka's jars")
    cmd = [mvn, "-q", "-B", "-f", str(HERE / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={LIBS}", "-DincludeScope=runtime"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not any(LIBS.glob("kafka_2.13-*.jar")):
        tail = (res.stdout + res.stderr).strip().splitlines()[-3:]
        raise LauncherError(f"Maven could not fetch Kafka's jars: {' | '.join(tail)}.")
    return LIBS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=8
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=6000
group.classic.min.session.timeout.ms=6000
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=10000
log.segment.delete.delay.ms=1000
log.segment.bytes=16777216
"""

LOG4J2 = """\
Configuration:
  Appenders:
    File:
      name: file
      fileName: "{log}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: file
"""


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise LauncherError(f"Kafka exited with code {proc.returncode}: {' | '.join(tail)}")
        if _port_open(port) and _metadata_ok(port):
            return
        time.sleep(0.3)
    raise LauncherError(f"Kafka did not answer on 127.0.0.1:{port} within {timeout:.0f}s (see {log}).")


def _metadata_ok(port: int) -> bool:
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:  # plain socket check is all we can do
        return True
    try:
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=2)
        return bool(md.brokers)
    except Exception:
        return False


def start(port: int | None = None, workdir: Path | None = None, timeout: float = 90.0,
          fresh: bool = True,
          properties: dict[str, str] | None = None) -> LocalKafka:
    """`properties`: broker settings added to (or overriding) server.properties, e.g. the log
    cleaner's `log.cleaner.backoff.ms` for a test that watches compaction."""
    java = _require("java", "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    if _java_major(java) < 17:
        raise LauncherError("Kafka 4 needs Java 17 or newer; `java -version` reports an older one.")
    libs = ensure_jars()
    workdir = Path(workdir or DEFAULT_DIR).resolve()
    if (workdir / "kafka.pid").exists():
        stop(workdir)
    if fresh and (workdir / "data").exists():
        shutil.rmtree(workdir / "data")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or DEFAULT_PORT
    if _port_open(port):
        raise LauncherError(f"port {port} is already taken; pass another with --port or stop what uses it.")
    cport = free_port()
    data, log = workdir / "data", workdir / "kafka.log"
    props = workdir / "server.properties"
    text = SERVER_PROPERTIES.format(port=port, cport=cport, data=data)
    for name, value in (properties or {}).items():  # a later line wins in a .properties file
        text += f"{name}={value}\n"
    props.write_text(text)
    log4j = workdir / "log4j2.yaml"
    log4j.write_text(LOG4J2.format(log=log))
    cp = f"{libs}/*"
    jvm = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={log4j}", "-Dkafka.logs.dir=" + str(workdir)]
    if not (data / "meta.properties").exists():
        cluster_id = "-"
        while cluster_id.startswith("-"):  # like Kafka's Uuid: "-…" would read as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        fmt = subprocess.run([java, *jvm, "-cp", cp, "kafka.tools.StorageTool", "format",
                              "-t", cluster_id, "-c", str(props)], capture_output=True, text=True)
        if fmt.returncode != 0:
            raise LauncherError(f"formatting KRaft storage failed: {fmt.stderr.strip()[-300:]}")
    with open(workdir / "stdout.log", "ab") as out:
        proc = subprocess.Popen([java, *jvm, "-cp", cp, "kafka.Kafka", str(props)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (workdir / "kafka.pid").write_text(str(proc.pid))
    (workdir / "bootstrap").write_text(f"127.0.0.1:{port}")
    try:
        _wait_ready(port, proc, log, timeout)
    except BaseException:
        stop(workdir)
        raise
    return LocalKafka(f"127.0.0.1:{port}", workdir, proc.pid)


def stop(workdir: Path | None = None, timeout: float = 30.0) -> bool:
    workdir = Path(workdir or DEFAULT_DIR).resolve()
    pidfile = workdir / "kafka.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text().strip() or 0)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                if _is_zombie(pid):
                    break
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            continue
        break
    pidfile.unlink(missing_ok=True)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["up", "down", "fetch"])
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--keep-data", action="store_true", help="reuse the data of an earlier run")
    args = ap.parse_args(argv)
    try:
        if args.action == "fetch":
            print(ensure_jars())
        elif args.action == "up":
            k = start(args.port, args.dir, fresh=not args.keep_data)
            print(k.bootstrap)
        else:
            print("stopped" if stop(args.dir) else "not running")
    except LauncherError as e:
        print(f"local kafka: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
