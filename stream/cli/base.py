"""What every `tusk` subcommand shares: the error it ends with, the flags it passes on, HTTP to a
worker, and writing, listing and deleting definitions (segments, journeys) on the definitions topic.

The subcommand modules (stream/cli/commands.py, identity.py, journeys.py, predict.py) and the demo
import this module; it imports none of them.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from processors.common.errors import TuskError


class CliError(TuskError):
    """A sentence for the person at the terminal."""


def flag_env(args: argparse.Namespace, names: dict[str, str]) -> dict[str, str]:
    """The environment with the given flags over it ({flag attribute: variable}): what the
    command's settings are read from (stream/runtime/variables.py), passed on, never written back."""
    from stream.runtime.variables import with_flags

    return with_flags({env: getattr(args, attr, None) for attr, env in names.items()})


COMMON_ENV = {"bootstrap": "KAFKA_BOOTSTRAP_SERVERS", "prefix": "TUSK_TOPIC_PREFIX",
              "partitions": "TUSK_PARTITIONS", "app_id": "TUSK_APP_ID"}


def http_get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    from stream.runtime.variables import given

    token = given("TUSK_API_TOKEN")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, orjson.loads(body)
        except orjson.JSONDecodeError:
            return e.code, {"error": body.decode(errors="replace")}
    except (urllib.error.URLError, OSError) as e:
        raise CliError(f"no Tusk worker answers at {url}: {e}.") from e


def current_catalog(settings: Any) -> Any:
    """The definitions in force, read from the topic (CliError when Kafka does not answer)."""
    from stream.runtime.definitions import DefinitionsReader

    reader = DefinitionsReader(settings)
    try:
        reader.start(timeout=15)
    except Exception as e:
        raise CliError(f"cannot read the definitions from Kafka at {settings.bootstrap}: {e}") from e
    finally:
        reader.stop()
    return reader


Batches = list[tuple[str, list[dict[str, Any]]]]


def apply_definitions(args: argparse.Namespace,
                      load: Callable[[Any], Batches]) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """Write a definitions file to the definitions topic: create the topics, read the
    definitions in force, `load(reader)` the file against them (ConfigError → CliError) as
    (kind, specs) batches, then produce every spec in that order. (settings, kind → specs)."""
    env = flag_env(args, COMMON_ENV)
    from processors.common.config import ConfigError
    from stream.kafka.clients import ensure_topics
    from stream.runtime.definitions import produce_definition
    from stream.runtime.settings import Settings

    settings = Settings.from_env(env)
    try:
        ensure_topics(settings)
    except Exception as e:
        raise CliError(f"cannot reach Kafka at {settings.bootstrap} to create topics: {e}") from e
    reader = current_catalog(settings)
    try:
        batches = load(reader)
    except ConfigError as e:
        raise CliError(str(e)) from None
    for kind, items in batches:
        for spec in items:
            produce_definition(settings, kind, spec["id"], spec)
    return settings, dict(batches)


def in_force_and_live(args: argparse.Namespace, route: str, field: str) -> tuple[Any, dict[str, Any]]:
    """The definitions in force, and {id: its `field`} of a worker's GET `route` (the list
    under the route's last name), empty when no worker answers."""
    env = flag_env(args, COMMON_ENV)
    from stream.runtime.settings import Settings

    reader = current_catalog(Settings.from_env(env))
    live: dict[str, Any] = {}
    try:
        status, body = http_get(args.url.rstrip("/") + route, timeout=5)
        if status == 200:
            live = {item["id"]: item.get(field) for item in body[route.rsplit("/", 1)[-1]]}
    except CliError:
        pass
    return reader, live


def delete_definition(args: argparse.Namespace, kind: str, exists: Callable[[Any], bool],
                      check: Callable[[Any], object], in_use: str) -> int:
    """Tombstone definition `args.id` of `kind` once `check(reader)` (DefinitionError: still
    `in_use`) allows it."""
    env = flag_env(args, COMMON_ENV)
    from processors.common.predicates import DefinitionError
    from stream.runtime.definitions import produce_definition
    from stream.runtime.settings import Settings

    settings = Settings.from_env(env)
    reader = current_catalog(settings)
    label = kind.replace("_", " ")
    if not exists(reader):
        raise CliError(f"there is no {label} {args.id!r}.")
    try:
        check(reader)
    except DefinitionError as e:
        raise CliError(f"{args.id!r} {in_use} ({e}).") from None
    produce_definition(settings, kind, args.id, None)
    print(f"deleted {label} {args.id}")
    return 0
