#!/usr/bin/env python3
"""A real Apache Kafka (KRaft, one combined broker/controller) on loopback, no Docker.

The jars come from Maven Central through deploy/kafka/pom.xml and are cached in
deploy/kafka/.cache/libs. Usage:

    python deploy/kafka/local_kafka.py up   [--port 19092] [--dir DIR] [--sasl USER:PASSWORD] [--tls]
    python deploy/kafka/local_kafka.py down [--dir DIR]

`up` waits until the broker answers and prints its bootstrap address. Imported by
the test fixture and by `tusk demo` (start()/stop()).

With `--sasl USER:PASSWORD` (repeatable) the client listener is SASL_PLAINTEXT
with SCRAM-SHA-256 (`--mechanism SCRAM-SHA-512` or `PLAIN` for the others):
SCRAM users are written into the KRaft metadata when the storage is formatted
(`kafka-storage format --add-scram`), PLAIN users into the listener's JAAS
config; `--mechanism OAUTHBEARER` uses Kafka's development validator, which
accepts any unsigned token (for OIDC clients with a test token endpoint).
`--tls` makes the listener SSL (SASL_SSL with `--sasl`) with a
certificate for 127.0.0.1 signed by a CA made for it (DIR/tls/ca.pem, printed
on stderr; needs openssl). Clients then need, e.g. for Tusk:

    TUSK_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT TUSK_KAFKA_SASL_MECHANISM=SCRAM-SHA-256
    TUSK_KAFKA_SASL_USERNAME=USER TUSK_KAFKA_SASL_PASSWORD=PASSWORD
    (with --tls: SASL_SSL, and TUSK_KAFKA_SSL_CA_LOCATION=DIR/tls/ca.pem)
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
    mechanism: str | None = None
    """the SASL mechanism of the client listener, None without SASL"""
    ca: Path | None = None
    """the CA that signed the broker's certificate (PEM) when the listener is TLS"""

    def client_config(self, user: str = "", password: str = "") -> dict[str, str]:
        """librdkafka settings for a client logging in as `user`."""
        return client_config(self.bootstrap, (self.mechanism, user, password) if self.mechanism else None,
                             self.ca)

    def tusk_env(self, user: str = "", password: str = "") -> dict[str, str]:
        """The environment that points Tusk at this broker as `user` (TUSK_KAFKA_*)."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        for name, value in self.client_config(user, password).items():
            if name != "bootstrap.servers":
                env["TUSK_KAFKA_" + name.replace(".", "_").upper()] = value
        return env

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
listeners={protocol}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners={protocol}://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name={protocol}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,{protocol}:{protocol}
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

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN", "OAUTHBEARER")
_UNSAFE = '"\\;,[]= '  # they would break the JAAS line or --add-scram
BROKER_USER = "tusk-local-broker"  # the broker's own login on its SASL listener (inter-broker)


def _jaas_quote(text: str) -> str:
    if not text or any(c in text for c in _UNSAFE):
        raise LauncherError("SASL user names and passwords for the local broker need at least one "
                            "character and none of: " + " ".join(_UNSAFE.replace(" ", "")) + " or a space.")
    return text


def sasl_properties(mechanism: str, users: dict[str, str], broker_password: str,
                    listener: str = "SASL_PLAINTEXT") -> str:
    """server.properties lines of a SASL client and inter-broker listener."""
    if mechanism not in MECHANISMS:
        raise LauncherError(f"SASL mechanism {mechanism!r}: expected one of {', '.join(MECHANISMS)}.")
    prefix = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"
    if mechanism == "OAUTHBEARER":  # Kafka's unsecured validator: any unsigned JWT with sub and exp
        jaas = ('org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required '
                f'unsecuredLoginStringClaim_sub="{BROKER_USER}";')
    elif mechanism == "PLAIN":
        accounts = "".join(f' user_{_jaas_quote(u)}="{_jaas_quote(p)}"'
                           for u, p in {**users, BROKER_USER: broker_password}.items())
        jaas = (f'org.apache.kafka.common.security.plain.PlainLoginModule required '
                f'username="{BROKER_USER}" password="{broker_password}"{accounts};')
    else:  # SCRAM users live in the cluster metadata (written at format time)
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="{BROKER_USER}" password="{broker_password}";')
    return (f"sasl.enabled.mechanisms={mechanism}\n"
            f"sasl.mechanism.inter.broker.protocol={mechanism}\n"
            f"{prefix}={jaas}\n")


def client_config(bootstrap: str, sasl: tuple[str, str, str] | None,
                  ca: Path | None = None) -> dict[str, str]:
    """librdkafka settings to reach the broker: sasl is (mechanism, user, password), ca the CA
    file of a TLS listener."""
    conf = {"bootstrap.servers": bootstrap}
    if ca is not None:
        conf.update({"security.protocol": "SSL", "ssl.ca.location": str(ca)})
    if sasl is not None:
        mechanism, user, password = sasl
        conf.update({"security.protocol": "SASL_SSL" if ca else "SASL_PLAINTEXT",
                     "sasl.mechanism": mechanism})
        if mechanism == "OAUTHBEARER":  # librdkafka's own unsigned token (the broker accepts any)
            conf.update({"enable.sasl.oauthbearer.unsecure.jwt": "true",
                         "sasl.oauthbearer.config": f"principal={user}"})
        else:
            conf.update({"sasl.username": user, "sasl.password": password})
    return conf


def make_certificates(folder: Path) -> tuple[Path, Path]:
    """A throw-away CA and a broker certificate for 127.0.0.1 / localhost signed by it (openssl):
    (CA file, broker PEM keystore: private key then certificate)."""
    openssl = _require("openssl", "install OpenSSL to give the local broker a TLS listener")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key, key, csr, cert = (folder / n for n in ("ca.pem", "ca.key", "broker.key", "broker.csr",
                                                        "broker.pem"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
         "-days", "7", "-subj", "/CN=tusk-local-ca"],
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "7", "-extfile", str(ext)],
    ]
    for cmd in steps:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise LauncherError(f"openssl could not make the local certificates: {res.stderr.strip()[-200:]}")
    keystore = folder / "broker-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return ca, keystore


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


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float,
                conf: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise LauncherError(f"Kafka exited with code {proc.returncode}: {' | '.join(tail)}")
        if _port_open(port) and _metadata_ok(conf or {"bootstrap.servers": f"127.0.0.1:{port}"}):
            return
        time.sleep(0.3)
    raise LauncherError(f"Kafka did not answer on 127.0.0.1:{port} within {timeout:.0f}s (see {log}).")


def _metadata_ok(conf: dict[str, str]) -> bool:
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:  # plain socket check is all we can do
        return True
    try:
        md = AdminClient({**conf, "log_level": 0}).list_topics(timeout=2)
        return bool(md.brokers)
    except Exception:
        return False


def start(port: int | None = None, workdir: Path | None = None, timeout: float = 90.0,
          fresh: bool = True, sasl_users: dict[str, str] | None = None,
          mechanism: str = "SCRAM-SHA-256", tls: bool = False,
          properties: dict[str, str] | None = None) -> LocalKafka:
    """Start a broker; with `sasl_users` (user → password) its client listener is SASL_PLAINTEXT
    with `mechanism` and only those users (and the broker itself) can log in; with `tls` the
    listener is SSL (SASL_SSL with users), its certificate signed by a CA made for it
    (`LocalKafka.ca`). `properties`: broker settings added to (or overriding) server.properties,
    e.g. the log cleaner's `log.cleaner.backoff.ms` for a test that watches compaction."""
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
    protocol = ("SASL_" if sasl_users else "") + ("SSL" if tls else "PLAINTEXT")
    text = SERVER_PROPERTIES.format(port=port, cport=cport, data=data, protocol=protocol)
    scram: list[str] = []
    ca: Path | None = None
    if tls:
        ca, keystore = make_certificates(workdir / "tls")
        text += (f"ssl.keystore.type=PEM\nssl.keystore.location={keystore}\n"
                 f"ssl.truststore.type=PEM\nssl.truststore.location={ca}\nssl.client.auth=none\n")
    ready_conf = client_config(f"127.0.0.1:{port}", None, ca)
    if sasl_users:
        broker_password = uuid.uuid4().hex
        text += sasl_properties(mechanism, sasl_users, broker_password, protocol)
        if mechanism.startswith("SCRAM"):
            for user, password in {**sasl_users, BROKER_USER: broker_password}.items():
                scram += ["--add-scram",
                          f"{mechanism}=[name={_jaas_quote(user)},password={_jaas_quote(password)}]"]
        ready_conf = client_config(f"127.0.0.1:{port}", (mechanism, BROKER_USER, broker_password), ca)
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
                              "-t", cluster_id, "-c", str(props), *scram], capture_output=True, text=True)
        if fmt.returncode != 0:
            raise LauncherError(f"formatting KRaft storage failed: {fmt.stderr.strip()[-300:]}")
    with open(workdir / "stdout.log", "ab") as out:
        proc = subprocess.Popen([java, *jvm, "-cp", cp, "kafka.Kafka", str(props)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (workdir / "kafka.pid").write_text(str(proc.pid))
    (workdir / "bootstrap").write_text(f"127.0.0.1:{port}")
    try:
        _wait_ready(port, proc, log, timeout, ready_conf)
    except BaseException:
        stop(workdir)
        raise
    return LocalKafka(f"127.0.0.1:{port}", workdir, proc.pid, mechanism if sasl_users else None, ca)


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
    ap.add_argument("--sasl", action="append", metavar="USER:PASSWORD",
                    help="a SASL_PLAINTEXT listener that lets this user in (repeatable)")
    ap.add_argument("--mechanism", default="SCRAM-SHA-256", choices=MECHANISMS)
    ap.add_argument("--tls", action="store_true",
                    help="a TLS listener (SSL, or SASL_SSL with --sasl) with a CA made for it")
    args = ap.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.sasl or [] if ":" in u)
    if len(users) != len(args.sasl or []):
        print("local kafka: --sasl expects USER:PASSWORD.", file=sys.stderr)
        return 1
    try:
        if args.action == "fetch":
            print(ensure_jars())
        elif args.action == "up":
            k = start(args.port, args.dir, fresh=not args.keep_data, sasl_users=users or None,
                      mechanism=args.mechanism, tls=args.tls)
            print(k.bootstrap)
            if k.ca is not None:
                print(f"CA: {k.ca}", file=sys.stderr)
        else:
            print("stopped" if stop(args.dir) else "not running")
    except LauncherError as e:
        print(f"local kafka: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
