"""TUSK_KAFKA_*: one parser, one check, the same login for librdkafka and Faust's aiokafka clients."""

from __future__ import annotations

import ast
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import certifi
import orjson
import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from hypothesis import given
from hypothesis import strategies as st

from stream.kafka import security as ks
from stream.kafka.clients import KafkaAccessError, connect
from stream.runtime.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]
SCRAM = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
         "sasl.username": "tusk", "sasl.password": "pw"}


@given(st.from_regex(r"[a-z][a-z0-9]*([._][a-z0-9]+)*", fullmatch=True))
def test_property_and_variable_names_are_inverse(prop: str) -> None:
    assert ks.property_name(ks.env_name(prop)) == prop


def test_settings_use_the_one_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TUSK_KAFKA_"):
            monkeypatch.delenv(name)
    env = {"TUSK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TUSK_KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
           "TUSK_KAFKA_SASL_USERNAME": "u", "TUSK_KAFKA_SASL_PASSWORD": "p",
           "TUSK_KAFKA_LOG__LEVEL": "6", "TUSK_KAFKA_CLIENT_ID": "", "TUSK_KAFKA_": "x"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    expected = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "u",
                "sasl.password": "p", "log_level": "6"}
    assert Settings.from_env().kafka_extra == expected == ks.client_config(env)


@pytest.mark.parametrize(("conf", "message"), [
    ({"security.protocol": "TLS"}, "TUSK_KAFKA_SECURITY_PROTOCOL='TLS': expected one of PLAINTEXT"),
    ({"sasl.username": "u"}, "TUSK_KAFKA_SASL_USERNAME is set but TUSK_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    ({"security.protocol": "SASL_SSL"}, "SASL_SSL needs TUSK_KAFKA_SASL_MECHANISM"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-1"},
     "TUSK_KAFKA_SASL_MECHANISM='SCRAM-SHA-1': expected one of"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "u"},
     "SASL PLAIN needs TUSK_KAFKA_SASL_USERNAME and TUSK_KAFKA_SASL_PASSWORD"),
    ({**SCRAM, "sasl.mechanisms": "PLAIN"}, "disagree"),
    ({**SCRAM, "ssl.ca.location": "/ca.pem"},
     "TUSK_KAFKA_SSL_CA_LOCATION is set but TUSK_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT"),
])
def test_check_refuses_what_cannot_work(conf: dict[str, str], message: str) -> None:
    with pytest.raises(ks.KafkaSecurityError, match=message.replace("(", r"\(")):
        ks.check(conf)


def test_a_bad_combination_stops_settings_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUSK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.delenv("TUSK_KAFKA_SASL_MECHANISM", raising=False)
    monkeypatch.delenv("TUSK_KAFKA_SASL_MECHANISMS", raising=False)
    with pytest.raises(SettingsError, match="needs TUSK_KAFKA_SASL_MECHANISM"):
        Settings.from_env()


def test_scram_reaches_faust_as_aiokafka_arguments() -> None:
    args = ks.aiokafka_auth(SCRAM)
    assert args == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                    "sasl_plain_username": "tusk", "sasl_plain_password": "pw"}
    creds = ks.faust_credentials(SCRAM)
    assert isinstance(creds, SASLCredentials)
    # what Faust's own transport hands to AIOKafkaConsumer / AIOKafkaProducer
    assert credentials_to_aiokafka_auth(creds) == {**args, "ssl_context": None}
    assert ks.faust_credentials({}) is None
    assert ks.login(SCRAM) == "SASL_PLAINTEXT, SCRAM-SHA-256 as user 'tusk'"


def test_tls_settings_become_one_ssl_context() -> None:
    conf = {**SCRAM, "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
            "ssl.ca.location": certifi.where(), "ssl.endpoint.identification.algorithm": "none"}
    creds = ks.faust_credentials(conf)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "PLAIN"
    ctx = auth["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert not ctx.check_hostname and ctx.get_ca_certs()  # the CA file was loaded
    tls = {"security.protocol": "SSL", "ssl.ca.location": os.path.dirname(certifi.where())}
    assert ks.ssl_context(tls).check_hostname  # librdkafka's default: verify the host name
    unverified = ks.faust_credentials({**tls, "enable.ssl.certificate.verification": "false"})
    assert isinstance(unverified, SSLCredentials) and unverified.context.verify_mode == ssl.CERT_NONE


def _client_certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a client certificate")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=tusk", "-passout", "pass:kpw"], check=True,
                   capture_output=True)
    return cert, key


def test_client_certificate_and_its_password(tmp_path: Path) -> None:
    cert, key = _client_certificate(tmp_path)
    conf = {"security.protocol": "SSL", "ssl.certificate.location": str(cert),
            "ssl.key.location": str(key), "ssl.key.password": "kpw"}
    assert isinstance(ks.ssl_context(conf), ssl.SSLContext)
    with pytest.raises(ks.KafkaSecurityError, match="TUSK_KAFKA_SSL_CERTIFICATE_LOCATION / "
                                                    "TUSK_KAFKA_SSL_KEY_LOCATION: cannot load"):
        ks.ssl_context({**conf, "ssl.key.password": "wrong"})
    with pytest.raises(ks.KafkaSecurityError, match="TUSK_KAFKA_SSL_CA_LOCATION: cannot load"):
        ks.ssl_context({**conf, "ssl.ca.location": str(tmp_path / "missing.pem")})


@pytest.mark.parametrize(("conf", "message"), [
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc"},
     "needs TUSK_KAFKA_SASL_OAUTHBEARER_METHOD=oidc, TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_ID, "
     "TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET, TUSK_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
      "enable.sasl.oauthbearer.unsecure.jwt": "true", "sasl.oauthbearer.config": "principal=tusk"},
     "librdkafka's other OAUTHBEARER methods work for the collector and the CLI only"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "GSSAPI"},
     "GSSAPI works for the collector and the CLI only"),
    ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"},
     "TUSK_KAFKA_SSL_KEYSTORE_LOCATION .ssl.keystore.location. has no equivalent"),
    ({**SCRAM, "sasl.kerberos.service.name": "kafka"}, "TUSK_KAFKA_SASL_KERBEROS_SERVICE_NAME"),
])
def test_what_aiokafka_cannot_do_is_refused_for_the_worker_only(conf: dict[str, str], message: str) -> None:
    ks.check(conf)  # fine for the librdkafka clients
    with pytest.raises(ks.KafkaSecurityError, match=message):
        ks.faust_credentials(conf)


def test_the_worker_app_gets_the_login() -> None:
    """stream.runtime.app builds Faust's App with the mapped credentials (in a fresh interpreter, from
    the environment's settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUSK_KAFKA_")}
    env.update({ks.env_name(k): v for k, v in SCRAM.items()})
    code = ("import orjson; from stream.runtime.app import build_app; "
            "from stream.runtime.settings import Settings; app = build_app(Settings.from_env()).app; "
            "from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth as a; "
            "print(orjson.dumps(a(app.conf.broker_credentials, app.conf.ssl_context)).decode())")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout.splitlines()[-1]) == {**ks.aiokafka_auth(SCRAM), "ssl_context": None}
    env[ks.env_name("sasl.mechanism")] = "GSSAPI"
    out = subprocess.run([sys.executable, "-m", "stream.cli.commands", "worker"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("tusk: TUSK_KAFKA_SASL_MECHANISM=GSSAPI: the worker's Faust clients")


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and ((isinstance(n.func, ast.Name) and n.func.id in names)
                 or (isinstance(n.func, ast.Attribute) and n.func.attr in names))]


def test_every_kafka_client_in_stream_is_built_from_the_settings() -> None:
    """Every confluent-kafka client of the worker, collector and CLI gets its configuration from
    kafka_io.client_config (bootstrap + TUSK_KAFKA_*), or from a function that does; no aiokafka
    client is opened outside Faust (which gets the same login through broker_credentials)."""
    through = {"client_config", "producer_config"}  # producer_config: the collector's, checked below
    found: list[str] = []
    for path in sorted((REPO / "stream").rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        assert "AIOKafkaConsumer(" not in source and "AIOKafkaProducer(" not in source, path
        functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        for call in _calls(tree, {"Consumer", "Producer", "AdminClient"}):
            found.append(f"{path.name}:{call.lineno}")
            arg = call.args[0] if call.args else None
            names = {n.id for n in ast.walk(arg) if isinstance(n, ast.Name)} if arg else set()
            called = ({c.func.id for c in _calls(arg, through) if isinstance(c.func, ast.Name)}
                      if arg else set())
            if called & through:
                continue
            # a variable: it must be assigned from client_config(...) in the enclosing function
            enclosing = [f for f in functions.values() if f.lineno <= call.lineno <= (f.end_lineno or 0)]
            assigned = {c.func.id for f in enclosing for a in ast.walk(f) if isinstance(a, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id in names for t in a.targets)
                        for c in _calls(a.value, through) if isinstance(c.func, ast.Name)}
            # or a bare parameter (the collector's KafkaSink takes producer_config's result)
            params = {a.arg for f in enclosing for a in f.args.args}
            passed = isinstance(arg, ast.Name) and arg.id in params
            assert assigned & through or passed, (
                f"{path.name}:{call.lineno}: build this Kafka client from stream.kafka.clients.client_config "
                f"(settings), so that TUSK_KAFKA_* reaches it")
    # the scan sees the clients (admin, producer, readers, restore, ...): built here, or through
    # kafka_io.reader / kafka_io.producer, which build them from client_config
    helpers = [f"{path.name}:{c.lineno}" for path in sorted((REPO / "stream").rglob("*.py"))
               for c in _calls(ast.parse(path.read_text()), {"reader", "producer"})]
    assert len(found) >= 5 and len(found) + len(helpers) >= 8, (found, helpers)


def test_the_collector_producer_gets_the_login() -> None:
    from stream.ingest.collector import CollectorConfig, producer_config

    settings = Settings(bootstrap="b:1", kafka_extra=dict(SCRAM))
    conf: dict[str, Any] = producer_config(settings, CollectorConfig())
    assert {k: conf[k] for k in SCRAM} == SCRAM


def test_no_broker_is_a_sentence_not_a_hang() -> None:
    from stream.demo.session import free_port

    port = free_port()
    with pytest.raises(KafkaAccessError, match=f"no Kafka broker answered at 127.0.0.1:{port} within 1s"):
        connect(Settings(bootstrap=f"127.0.0.1:{port}"), timeout=1)


def test_the_mapping_is_documented() -> None:
    doc = (REPO / "docs" / "kafka-security.md").read_text()
    for prop, aiokafka in ks.MAPPING:
        assert f"| `{prop}` | {aiokafka} |" in doc, (
            f"docs/kafka-security.md: add the row | `{prop}` | {aiokafka} | to the mapping table")


def test_oidc_tokens_for_the_worker(tmp_path: Path) -> None:
    """The client credentials grant as librdkafka's oidc method makes it; a token is reused while
    fresh; the endpoint's refusal is a sentence."""
    import asyncio
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    seen: list[tuple[str | None, dict[str, list[str]]]] = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            seen.append((self.headers.get("Authorization"), form))
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"tusk:pw").decode()
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(orjson.dumps({"access_token": "t1", "expires_in": 600}) if ok else b"denied")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conf = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
                "sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.client.id": "tusk",
                "sasl.oauthbearer.client.secret": "pw", "sasl.oauthbearer.scope": "kafka",
                "sasl.oauthbearer.extensions": "logicalCluster=lkc-1,identityPoolId=pool-2",
                "sasl.oauthbearer.token.endpoint.url": f"http://127.0.0.1:{server.server_address[1]}/t"}
        creds = ks.faust_credentials(conf)
        auth = credentials_to_aiokafka_auth(creds)
        assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "OAUTHBEARER"
        provider = auth["sasl_oauth_token_provider"]

        async def twice() -> list[str]:
            return [await provider.token(), await provider.token()]

        assert asyncio.run(twice()) == ["t1", "t1"] and len(seen) == 1  # reused while fresh
        assert seen[0][1] == {"grant_type": ["client_credentials"], "scope": ["kafka"]}
        assert provider.extensions() == {"logicalCluster": "lkc-1", "identityPoolId": "pool-2"}
        wrong_conf = {**conf, "sasl.oauthbearer.client.secret": "no"}
        wrong = ks.aiokafka_auth(wrong_conf)["sasl_oauth_token_provider"]
        with pytest.raises(ks.KafkaSecurityError, match="answered 401: denied"):
            asyncio.run(wrong.token())
    finally:
        server.shutdown()
