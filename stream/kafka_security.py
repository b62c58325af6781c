"""librdkafka client settings from `TUSK_KAFKA_*` environment variables.

Anything a managed Kafka needs (TLS, SASL/PLAIN, SCRAM, OAUTHBEARER/OIDC bearer
tokens, client certificates) is a librdkafka property; rather than wrap each
one, Tusk passes them through. The variable name after `TUSK_KAFKA_` is
lower-cased and `_` becomes `.`; a doubled `__` stands for a literal `_`
(librdkafka has a few names like `log_level`):

    TUSK_KAFKA_SECURITY_PROTOCOL=SASL_SSL            → security.protocol
    TUSK_KAFKA_SASL_MECHANISMS=SCRAM-SHA-512         → sasl.mechanisms
    TUSK_KAFKA_SASL_USERNAME / _SASL_PASSWORD        → sasl.username / sasl.password
    TUSK_KAFKA_SSL_CA_LOCATION=/etc/tusk/ca.pem      → ssl.ca.location
    TUSK_KAFKA_SASL_OAUTHBEARER_METHOD=oidc          → sasl.oauthbearer.method (bearer tokens
    TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_ID / _CLIENT_SECRET / _TOKEN_ENDPOINT_URL   fetched and
                                                       refreshed by librdkafka itself)
    TUSK_KAFKA_LOG__LEVEL=6                          → log_level

Values are passed as strings, unchecked: librdkafka names an unknown property
or a bad value itself when the client is created. Secrets come from the
environment (a Kubernetes Secret) and are never logged here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PREFIX = "TUSK_KAFKA_"
_UNDERSCORE = "\0"  # placeholder while single underscores turn into dots


def property_name(env_name: str) -> str:
    """`TUSK_KAFKA_SASL_USERNAME` → `sasl.username` (`__` → `_`)."""
    rest = env_name[len(PREFIX):] if env_name.startswith(PREFIX) else env_name
    return rest.lower().replace("__", _UNDERSCORE).replace("_", ".").replace(_UNDERSCORE, "_")


def client_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The librdkafka properties set through `TUSK_KAFKA_*` (empty values are ignored)."""
    env = os.environ if environ is None else environ
    return {property_name(k): v for k, v in sorted(env.items())
            if k.startswith(PREFIX) and len(k) > len(PREFIX) and v != ""}

