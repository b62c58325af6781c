"""Kafka client settings from `TUSK_KAFKA_*`: one parser, one mapping, for every client.

Anything a managed Kafka needs (TLS, SASL/PLAIN, SCRAM, OAUTHBEARER/OIDC bearer
tokens, client certificates) is a librdkafka property; rather than wrap each
one, Tusk passes them through. The variable name after `TUSK_KAFKA_` is
lower-cased and `_` becomes `.`; a doubled `__` stands for a literal `_`
(librdkafka has a few names like `log_level`):

    TUSK_KAFKA_SECURITY_PROTOCOL=SASL_SSL            → security.protocol
    TUSK_KAFKA_SASL_MECHANISM=SCRAM-SHA-512          → sasl.mechanism (or SASL_MECHANISMS)
    TUSK_KAFKA_SASL_USERNAME / _SASL_PASSWORD        → sasl.username / sasl.password
    TUSK_KAFKA_SSL_CA_LOCATION=/etc/tusk/ca.pem      → ssl.ca.location
    TUSK_KAFKA_SASL_OAUTHBEARER_METHOD=oidc          → sasl.oauthbearer.method (bearer tokens
    TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_ID / _CLIENT_SECRET / _TOKEN_ENDPOINT_URL   fetched and
                                                       refreshed by librdkafka itself)
    TUSK_KAFKA_LOG__LEVEL=6                          → log_level

`client_config` is the one parser: `Settings.from_env` calls it, and every
librdkafka client (producers, the outbox, group-less readers, admin clients,
the collector) is built from `Settings.kafka_extra` by `stream.kafka.clients.client_config`.
`check` refuses, at load, combinations that would only fail later on the wire
(SASL settings without a SASL protocol, a SASL protocol without a mechanism or
without a user).

The worker's Faust consumer and producer are aiokafka clients, which take
Python arguments instead; `aiokafka_auth` and `faust_credentials` map the
security settings onto them (`MAPPING` below). A security setting with no
aiokafka equivalent stops the worker at start with a sentence naming it,
rather than leaving its consumer unable to join the cluster. Settings other
than security ones (`client.id`, `compression.type`, ...) reach the librdkafka
clients only.

Secrets come from the environment (a Kubernetes Secret) and are never logged here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from processors.common.errors import TuskError

PREFIX = "TUSK_KAFKA_"
_UNDERSCORE = "\0"  # placeholder while single underscores turn into dots

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
FAUST_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
_OIDC = ("sasl.oauthbearer.client.id", "sasl.oauthbearer.client.secret",
         "sasl.oauthbearer.token.endpoint.url")

MAPPING: tuple[tuple[str, str], ...] = (
    ("security.protocol", "security_protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"),
    ("sasl.mechanism / sasl.mechanisms", "sasl_mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)"),
    ("sasl.username", "sasl_plain_username"),
    ("sasl.password", "sasl_plain_password"),
    ("sasl.oauthbearer.method=oidc", "sasl_oauth_token_provider: tokens of the client credentials grant"),
    ("sasl.oauthbearer.client.id / .client.secret", "the client's credentials at the token endpoint"),
    ("sasl.oauthbearer.token.endpoint.url", "where the tokens come from (refreshed before they expire)"),
    ("sasl.oauthbearer.scope", "the scope asked for"),
    ("sasl.oauthbearer.extensions", "SASL extensions (key=value,...), e.g. Confluent Cloud's logicalCluster"),
    ("ssl.ca.location", "ssl_context: CA file, or directory (cafile / capath); unset: the system CAs"),
    ("ssl.ca.pem", "ssl_context: CA certificates as PEM text (cadata)"),
    ("ssl.certificate.location", "ssl_context: client certificate chain (certfile)"),
    ("ssl.key.location", "ssl_context: client private key (keyfile)"),
    ("ssl.key.password", "ssl_context: password of the private key"),
    ("ssl.cipher.suites", "ssl_context: set_ciphers(...)"),
    ("ssl.endpoint.identification.algorithm=none", "ssl_context: check_hostname = False"),
    ("enable.ssl.certificate.verification=false", "ssl_context: verify_mode = CERT_NONE"),
)
"""librdkafka property → what the worker's aiokafka consumer and producer get (docs/)."""

_SSL_MAPPED = {"ssl.ca.location", "ssl.ca.pem", "ssl.certificate.location", "ssl.key.location",
               "ssl.key.password", "ssl.cipher.suites", "ssl.endpoint.identification.algorithm",
               "enable.ssl.certificate.verification"}
_SASL_MAPPED = {"sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
                "sasl.oauthbearer.method", *_OIDC, "sasl.oauthbearer.scope", "sasl.oauthbearer.extensions"}


class KafkaSecurityError(TuskError, ValueError):
    """A sentence naming the TUSK_KAFKA_* variable to fix."""


def property_name(env_name: str) -> str:
    """`TUSK_KAFKA_SASL_USERNAME` → `sasl.username` (`__` → `_`)."""
    rest = env_name[len(PREFIX):] if env_name.startswith(PREFIX) else env_name
    return rest.lower().replace("__", _UNDERSCORE).replace("_", ".").replace(_UNDERSCORE, "_")


def env_name(prop: str) -> str:
    """`sasl.username` → `TUSK_KAFKA_SASL_USERNAME` (the inverse of property_name)."""
    return PREFIX + prop.replace("_", "__").replace(".", "_").upper()


def client_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The librdkafka properties set through `TUSK_KAFKA_*` (empty values are ignored)."""
    from stream.runtime.variables import family

    return {property_name(k): v for k, v in family(PREFIX, environ).items()}


def protocol(conf: Mapping[str, str]) -> str:
    return conf.get("security.protocol", "PLAINTEXT").upper()


def mechanism(conf: Mapping[str, str]) -> str | None:
    value = conf.get("sasl.mechanism") or conf.get("sasl.mechanisms")
    return value.upper() if value else None


def check(conf: Mapping[str, str]) -> None:
    """Refuse what librdkafka would accept but that cannot work (KafkaSecurityError)."""
    proto = protocol(conf)
    if proto not in PROTOCOLS:
        raise KafkaSecurityError(f"{env_name('security.protocol')}={conf['security.protocol']!r}: "
                                 f"expected one of {', '.join(PROTOCOLS)}.")
    both = conf.get("sasl.mechanism"), conf.get("sasl.mechanisms")
    if all(both) and both[0] != both[1]:
        raise KafkaSecurityError(f"{env_name('sasl.mechanism')} and {env_name('sasl.mechanisms')} "
                                 f"disagree ({both[0]!r}, {both[1]!r}): set one of them.")
    tls_set = sorted(k for k in conf if k.startswith("ssl.") or k == "enable.ssl.certificate.verification")
    if tls_set and proto not in ("SSL", "SASL_SSL"):
        raise KafkaSecurityError(f"{env_name(tls_set[0])} is set but {env_name('security.protocol')} is "
                                 f"{proto}: set it to SSL or SASL_SSL (or unset the TLS settings).")
    sasl_set = sorted(k for k in conf if k.startswith("sasl."))
    if not proto.startswith("SASL"):
        if sasl_set:
            raise KafkaSecurityError(f"{env_name(sasl_set[0])} is set but {env_name('security.protocol')} is "
                                     f"{proto}: set it to SASL_PLAINTEXT or SASL_SSL (or unset the SASL "
                                     f"settings).")
        return
    mech = mechanism(conf)
    if mech is None:
        raise KafkaSecurityError(f"{env_name('security.protocol')}={proto} needs {env_name('sasl.mechanism')}"
                                 f" (one of {', '.join(MECHANISMS)}).")
    if mech not in MECHANISMS:
        raise KafkaSecurityError(f"{env_name('sasl.mechanism')}={mech!r}: expected one of "
                                 f"{', '.join(MECHANISMS)}.")
    if mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (conf.get("sasl.username")
                                                                and conf.get("sasl.password")):
        raise KafkaSecurityError(f"SASL {mech} needs {env_name('sasl.username')} and "
                                 f"{env_name('sasl.password')}.")


def login(conf: Mapping[str, str]) -> str:
    """How the clients log in, for messages: 'SASL_PLAINTEXT, SCRAM-SHA-256 as user tusk' (no secrets)."""
    proto = protocol(conf)
    if not proto.startswith("SASL"):
        return proto
    user = conf.get("sasl.username")
    return f"{proto}, {mechanism(conf)}" + (f" as user {user!r}" if user else "")


def ssl_context(conf: Mapping[str, str]) -> ssl.SSLContext:
    """The Python TLS context equivalent to librdkafka's ssl.* settings."""
    unmapped = sorted(k for k in conf if k.startswith("ssl.") and k not in _SSL_MAPPED)
    if unmapped:
        raise KafkaSecurityError(
            f"{env_name(unmapped[0])} ({unmapped[0]}) has no equivalent for the worker's Faust "
            f"clients (aiokafka): use PEM files through ssl.ca.location, ssl.certificate.location "
            f"and ssl.key.location.")
    ca = conf.get("ssl.ca.location")
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=ca if ca and not os.path.isdir(ca) else None,
            capath=ca if ca and os.path.isdir(ca) else None,
            cadata=conf.get("ssl.ca.pem"))
    except (OSError, ssl.SSLError, ValueError) as e:
        what = env_name("ssl.ca.location") if ca else env_name("ssl.ca.pem")
        raise KafkaSecurityError(f"{what}: cannot load the CA certificates ({e}).") from None
    cert, key = conf.get("ssl.certificate.location"), conf.get("ssl.key.location")
    if key and not cert:
        raise KafkaSecurityError(f"{env_name('ssl.key.location')} is set without "
                                 f"{env_name('ssl.certificate.location')}.")
    if cert:
        try:
            ctx.load_cert_chain(cert, key, conf.get("ssl.key.password"))
        except (OSError, ssl.SSLError, ValueError) as e:
            raise KafkaSecurityError(f"{env_name('ssl.certificate.location')} / "
                                     f"{env_name('ssl.key.location')}: cannot load the client "
                                     f"certificate ({e}).") from None
    if conf.get("ssl.cipher.suites"):
        try:
            ctx.set_ciphers(conf["ssl.cipher.suites"])
        except ssl.SSLError as e:
            raise KafkaSecurityError(f"{env_name('ssl.cipher.suites')}: {e}.") from None
    if conf.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
        ctx.check_hostname = False
    if conf.get("enable.ssl.certificate.verification", "true").lower() in ("false", "0"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def aiokafka_auth(conf: Mapping[str, str]) -> dict[str, Any]:
    """aiokafka client arguments equivalent to the librdkafka security settings."""
    check(conf)
    proto = protocol(conf)
    args: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        args["ssl_context"] = ssl_context(conf)
    if proto.startswith("SASL"):
        mech = mechanism(conf)
        if mech not in FAUST_MECHANISMS:
            raise KafkaSecurityError(
                f"{env_name('sasl.mechanism')}={mech}: the worker's Faust clients (aiokafka) support "
                f"{', '.join(FAUST_MECHANISMS)} here; {mech} works for the collector and the CLI only.")
        if mech == "OAUTHBEARER":  # checks the method first: its message says what to set
            args.update(sasl_mechanism=mech, sasl_oauth_token_provider=oidc_token_provider(conf))
        else:
            args.update(sasl_mechanism=mech, sasl_plain_username=conf["sasl.username"],
                        sasl_plain_password=conf["sasl.password"])
        unmapped = sorted(k for k in conf if k.startswith("sasl.") and k not in _SASL_MAPPED)
        if unmapped:
            raise KafkaSecurityError(f"{env_name(unmapped[0])} ({unmapped[0]}) has no equivalent for the "
                                     f"worker's Faust clients (aiokafka) with SASL {mech}.")
    return args


def oidc_token_provider(conf: Mapping[str, str]) -> Any:
    """An aiokafka token provider for `sasl.oauthbearer.method=oidc` (the class is built on first
    use: aiokafka is imported only where OAUTHBEARER is used)."""
    return _oidc_provider()(conf)


@functools.cache
def _oidc_provider() -> type:
    from aiokafka.conn import AbstractTokenProvider

    class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc,valid-type]
        """OAUTHBEARER tokens for aiokafka, got the way librdkafka's `sasl.oauthbearer.method=oidc`
        gets them: the OAuth 2 client credentials grant at `sasl.oauthbearer.token.endpoint.url`
        (client id and secret as HTTP basic auth, `scope` when set), kept until shortly before
        they expire."""

        def __init__(self, conf: Mapping[str, str]) -> None:
            method = conf.get("sasl.oauthbearer.method", "default").lower()
            missing = [k for k in _OIDC if not conf.get(k)]
            if method != "oidc" or missing:
                raise KafkaSecurityError(
                    f"SASL OAUTHBEARER for the worker's Faust clients (aiokafka) needs "
                    f"{env_name('sasl.oauthbearer.method')}=oidc"
                    + "".join(f", {env_name(k)}" for k in (missing or _OIDC)) + "; librdkafka's other "
                    "OAUTHBEARER methods work for the collector and the CLI only.")
            self.url = conf["sasl.oauthbearer.token.endpoint.url"]
            self.client = (conf["sasl.oauthbearer.client.id"], conf["sasl.oauthbearer.client.secret"])
            self.scope = conf.get("sasl.oauthbearer.scope")
            extensions = conf.get("sasl.oauthbearer.extensions", "")
            pairs = [p.split("=", 1) for p in extensions.split(",") if "=" in p]
            self._extensions = {k.strip(): v.strip() for k, v in pairs}
            self._token: tuple[str, float] | None = None  # (token, monotonic time to renew it)

        def fetch(self) -> str:
            """A token from the endpoint (blocking); KafkaSecurityError with the endpoint's answer."""
            import base64
            import json
            import time
            import urllib.error
            import urllib.parse
            import urllib.request

            form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
            basic = base64.b64encode(":".join(self.client).encode()).decode()
            request = urllib.request.Request(self.url, data=urllib.parse.urlencode(form).encode(), headers={
                "Authorization": f"Basic {basic}", "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded"})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    body = json.loads(resp.read())
            except urllib.error.HTTPError as e:
                raise KafkaSecurityError(f"the token endpoint {self.url} answered {e.code}: "
                                         f"{e.read()[:200].decode(errors='replace')}") from None
            except (OSError, ValueError) as e:
                raise KafkaSecurityError(f"no token from {self.url}: {e}") from None
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise KafkaSecurityError(f"the token endpoint {self.url} answered without an access_token.")
            lifetime = float(body.get("expires_in") or 300)
            self._token = (token, time.monotonic() + lifetime * 0.8)
            return token

        async def token(self) -> str:
            import time

            if self._token is not None and time.monotonic() < self._token[1]:
                return self._token[0]
            return await asyncio.get_running_loop().run_in_executor(None, self.fetch)

        def extensions(self) -> dict[str, str]:
            return dict(self._extensions)

    return OidcTokenProvider


def faust_credentials(conf: Mapping[str, str]) -> Any:
    """Faust's `broker_credentials` (SASLCredentials / SSLCredentials / None) for the same login;
    Faust passes them to its aiokafka consumer, producer and topic creation."""
    import faust

    args = aiokafka_auth(conf)
    proto = args["security_protocol"]
    if proto == "SSL":
        return faust.SSLCredentials(args["ssl_context"])
    if args.get("sasl_mechanism") == "OAUTHBEARER":
        return faust.OAuthCredentials(oauth_cb=args["sasl_oauth_token_provider"],
                                      ssl_context=args.get("ssl_context"))
    if proto.startswith("SASL"):
        return faust.SASLCredentials(username=args["sasl_plain_username"],
                                     password=args["sasl_plain_password"],
                                     mechanism=args["sasl_mechanism"],
                                     ssl_context=args.get("ssl_context"))
    return None


def faust_login_problem(bootstrap: str, conf: Mapping[str, str], timeout: float = 30.0) -> str | None:
    """None when an aiokafka client with the mapped settings reaches the cluster, else why not
    (a sentence's worth). Blocking: run before Faust's event loop starts."""
    from aiokafka import AIOKafkaClient

    seen: list[str] = []

    class Keep(logging.Handler):  # aiokafka logs why a bootstrap server refused, then raises
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    async def attempt() -> None:
        client = AIOKafkaClient(bootstrap_servers=bootstrap.split(","), client_id="tusk-preflight",
                                request_timeout_ms=int(timeout * 1000), **aiokafka_auth(conf))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
        finally:
            await client.close()

    logger = logging.getLogger("aiokafka")
    keep, propagate = Keep(logging.ERROR), logger.propagate
    logger.addHandler(keep)
    logger.propagate = False
    try:
        # in a thread of its own: asyncio.run would leave this thread without an event loop,
        # and Faust takes the main thread's
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, attempt()).result()
        return None
    except Exception as e:  # KafkaConnectionError, TimeoutError, ssl errors
        reason = next((m.split('": ', 1)[-1] for m in reversed(seen) if "Unable connect" in m),
                      seen[-1] if seen else f"{type(e).__name__}: {e}")
        return reason.rstrip(". ")
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate
