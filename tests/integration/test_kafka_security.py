"""A worker, the collector and the CLI through a SASL listener: SCRAM-SHA-256 in the clear,
SCRAM-SHA-512 over TLS, and OAUTHBEARER with tokens from an OIDC token endpoint.

This test starts its own broker with the local launcher (deploy/kafka/local_kafka.py --sasl),
not the shared one: its only client listener requires a SCRAM login, so every client of a
worker (Faust's aiokafka consumer and producer, the outbox, the group-less readers, the admin
client), the collector's producer and the CLI's producer either log in with TUSK_KAFKA_* or
process nothing. Wrong credentials end each command at start with one sentence.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.demo.session import load_launcher, stop_process, wait_healthy
from stream.kafka.clients import KafkaAccessError, connect
from stream.kafka.security import faust_login_problem
from tests.integration.harness import Deployment, free_port, settings_from, wait_for

pytestmark = pytest.mark.kafka

USER, PASSWORD = "tusk-app", "s3cret-" + uuid.uuid4().hex[:8]


class TokenEndpoint(BaseHTTPRequestHandler):
    """An OIDC provider's token endpoint: the client credentials grant for USER / PASSWORD, answered
    with an unsigned JWT (the local broker's OAUTHBEARER validator is Kafka's development one)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "invalid_client"}')
            return
        now = int(time.time())
        part = [base64.urlsafe_b64encode(orjson.dumps(d)).decode().rstrip("=")
                for d in ({"alg": "none"}, {"sub": USER, "iat": now, "exp": now + 600})]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(orjson.dumps({"access_token": f"{part[0]}.{part[1]}.", "token_type": "bearer",
                                       "expires_in": 600}))

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Secured:
    """A broker whose only client listener needs a login, and how Tusk logs in to it."""

    broker: Any
    kind: str
    token_url: str | None = None

    def env(self, tmp_path: Path, secret: str = PASSWORD) -> dict[str, str]:
        run = f"s{uuid.uuid4().hex[:10]}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TUSK_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
        login = self.broker.tusk_env(USER, secret)
        if self.token_url is not None:  # what an OIDC deployment sets, instead of the launcher's own
            login = {k: v for k, v in login.items() if not k.startswith("TUSK_KAFKA_SASL_")
                     and k != "TUSK_KAFKA_ENABLE_SASL_OAUTHBEARER_UNSECURE_JWT"}
            login.update({"TUSK_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
                          "TUSK_KAFKA_SASL_OAUTHBEARER_METHOD": "oidc",
                          "TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_ID": USER,
                          "TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": secret,
                          "TUSK_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": self.token_url})
        return {**env, **login, "TUSK_TOPIC_PREFIX": f"{run}.", "TUSK_APP_ID": run, "TUSK_PARTITIONS": "2",
                "TUSK_DATADIR": str(tmp_path / "worker"), "TUSK_LOG_LEVEL": "info"}

    @property
    def refusal(self) -> tuple[str, str]:
        """(what the one sentence says, the variable it names) when the secret is wrong."""
        if self.token_url is not None:
            return "the login to the broker at", "_CLIENT_SECRET"
        return f"refused the login ({self.kind}", "TUSK_KAFKA_SASL_PASSWORD"


# SCRAM in the clear is SASL_SSL's path without TLS: in `make test-slow` only
@pytest.fixture(scope="module", params=[pytest.param("SASL_PLAINTEXT", marks=pytest.mark.slow), "SASL_SSL",
                                        "OAUTHBEARER"])
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """SCRAM-SHA-256 in the clear; SCRAM-SHA-512 over TLS (a CA made for the broker, the clients
    verify its certificate and host name); OAUTHBEARER with tokens from an OIDC token endpoint."""
    launcher = load_launcher()
    kind = request.param
    mechanism = {"SASL_PLAINTEXT": "SCRAM-SHA-256", "SASL_SSL": "SCRAM-SHA-512"}.get(kind, "OAUTHBEARER")
    idp: ThreadingHTTPServer | None = None
    if kind == "OAUTHBEARER":
        idp = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
        threading.Thread(target=idp.serve_forever, daemon=True).start()
    broker = launcher.start(port=launcher.free_port(), workdir=tmp_path_factory.mktemp("sasl-kafka"),
                            sasl_users={USER: PASSWORD}, tls=kind == "SASL_SSL", mechanism=mechanism)
    try:
        url = f"http://127.0.0.1:{idp.server_address[1]}/token" if idp is not None else None
        yield Secured(broker, f"{'SASL_SSL' if kind == 'SASL_SSL' else 'SASL_PLAINTEXT'}, {mechanism}", url)
    finally:
        broker.stop()
        if idp is not None:
            idp.shutdown()


def tusk(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli.commands", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_listener_requires_a_login(secured: Secured, tmp_path: Path) -> None:
    env = secured.env(tmp_path)
    assert f"{env['TUSK_KAFKA_SECURITY_PROTOCOL']}, {env['TUSK_KAFKA_SASL_MECHANISM']}" == secured.kind
    assert ("TUSK_KAFKA_SSL_CA_LOCATION" in env) == (env["TUSK_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL")
    connect(settings_from(env), timeout=20)  # the right login answers
    anonymous = {k: v for k, v in env.items() if not k.startswith("TUSK_KAFKA_")}
    with pytest.raises(KafkaAccessError, match="no Kafka broker answered"):
        connect(settings_from(anonymous), timeout=3)
    # the mapping for Faust's aiokafka clients logs in too, and a wrong password is named
    settings = settings_from(env)
    assert faust_login_problem(settings.bootstrap, settings.kafka_extra, timeout=20) is None
    wrong = settings_from(secured.env(tmp_path, secret="wrong")).kafka_extra
    problem = faust_login_problem(settings.bootstrap, wrong, timeout=20) or ""
    assert ("answered 401" if secured.token_url else "SaslAuthenticationFailed") in problem, problem


def test_worker_collector_and_cli_through_sasl(secured: Secured, tmp_path: Path) -> None:
    env = secured.env(tmp_path)
    deployment = Deployment(env, tmp_path)
    collector_port = free_port()
    collector_log = tmp_path / "collector.log"
    collector: subprocess.Popen[bytes] | None = None
    try:
        worker = deployment.add_worker()
        cenv = {**env, "TUSK_COLLECTOR_HOST": "127.0.0.1", "TUSK_COLLECTOR_PORT": str(collector_port),
                "TUSK_COLLECTOR_WRITE_KEYS": "wk"}
        with open(collector_log, "ab") as out:
            collector = subprocess.Popen([sys.executable, "-m", "stream.cli.commands", "collector"], env=cenv,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(f"http://127.0.0.1:{collector_port}", collector, collector_log, timeout=60)

        # the collector's producer: an identify over HTTP, acknowledged by the SASL broker
        body = orjson.dumps({"batch": [{"type": "identify", "userId": "sasl-u1", "messageId": "c-1",
                                        "traits": {"email": "sasl@example.com", "plan": "pro"}}]})
        req = urllib.request.Request(f"http://127.0.0.1:{collector_port}/v1/batch", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Basic " + base64.b64encode(b"wk:").decode()})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200 and orjson.loads(resp.read()) == {"success": True}

        # the CLI's producer: two tracks from a file
        events = tmp_path / "events.jsonl"
        events.write_bytes(b"\n".join(orjson.dumps(
            {"type": "track", "userId": "sasl-u1", "event": "Order Completed", "messageId": f"p-{i}",
             "properties": {"revenue": 10 * (i + 1)}}) for i in range(2)) + b"\n")
        produced = tusk(env, "produce", str(events), "--quiet")
        assert produced.returncode == 0, produced.stderr
        assert orjson.loads(produced.stdout.strip().splitlines()[-1])["delivered"] == 2

        # the worker's Faust consumer read all three, its outbox wrote the profile's changelog
        deployment.wait_accounted(3, timeout=120)

        def profile() -> dict[str, Any] | None:
            got = tusk(env, "profile", "get", "email:sasl@example.com", "--url", worker.url, timeout=30)
            return orjson.loads(got.stdout) if got.returncode == 0 else None

        prof = wait_for(lambda: (p := profile()) and len(p.get("recent_events", [])) >= 3 and p,
                        timeout=60, what="the profile with its three events")
        assert prof["identities"]["user_id"] == ["sasl-u1"]
        assert prof["traits"]["plan"] == "pro"
        assert {e.get("messageId") for e in prof["recent_events"]} >= {"c-1", "p-0", "p-1"}
        # the worker's group-less readers and admin client went through the same login: the
        # privacy export is a round trip over tusk.privacy and tusk.privacy-results
        exported = tusk(env, "privacy", "export", "user_id:sasl-u1", "--timeout", "60")
        assert exported.returncode == 0, exported.stderr
        assert orjson.loads(exported.stdout)["status"] == "done"
    finally:
        if collector is not None:
            stop_process(collector)
        deployment.stop()


@pytest.mark.parametrize("command", [["worker"], ["collector", "--port", "PORT"], ["produce", "EVENTS"],
                                     ["segments", "list"]],
                         ids=["worker", "collector", "produce", "segments"])
def test_wrong_credentials_end_the_command_with_one_sentence(secured: Secured, tmp_path: Path,
                                                              command: list[str]) -> None:
    env = secured.env(tmp_path, secret="not-the-password")
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "track", "userId": "u", "event": "E"}\n')
    args = [str(events) if a == "EVENTS" else str(free_port()) if a == "PORT" else a for a in command]
    started = time.monotonic()
    done = tusk(env, *args, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert elapsed < 30, f"took {elapsed:.0f}s to refuse"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # no traceback, no librdkafka log lines
    assert lines[0].startswith("tusk: ") and lines[0].endswith(".")
    said, variable = secured.refusal
    assert said in lines[0] and variable in lines[0], lines[0]
    assert "not-the-password" not in done.stderr  # the secret is not echoed
