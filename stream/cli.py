"""`tusk` command line. Errors end the command with exit 1 and one readable sentence."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson


class CliError(Exception):
    """A sentence for the person at the terminal."""


def _set_env(args: argparse.Namespace, names: dict[str, str]) -> None:
    for attr, env in names.items():
        value = getattr(args, attr, None)
        if value is not None:
            os.environ[env] = str(value)


COMMON_ENV = {"bootstrap": "KAFKA_BOOTSTRAP_SERVERS", "prefix": "TUSK_TOPIC_PREFIX",
              "partitions": "TUSK_PARTITIONS", "app_id": "TUSK_APP_ID"}


def cmd_worker(args: argparse.Namespace) -> int:
    _set_env(args, {**COMMON_ENV, "datadir": "TUSK_DATADIR", "web_port": "TUSK_WEB_PORT",
                    "log_level": "TUSK_LOG_LEVEL"})
    from stream.kafka_io import ensure_topics
    from stream.settings import Settings

    settings = Settings.from_env()
    if settings.identity_config:
        from processors.config import ConfigError
        from processors.identity import load_identity_config

        try:
            load_identity_config(settings.identity_config, settings.partitions)
        except ConfigError as e:
            raise CliError(str(e)) from None
    try:
        ensure_topics(settings)
    except Exception as e:
        raise CliError(f"cannot reach Kafka at {settings.bootstrap} to create topics: {e}") from e
    from stream.worker import run

    run(settings)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    _set_env(args, COMMON_ENV)
    from stream.produce import produce_file
    from stream.settings import Settings

    settings = Settings.from_env()
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} does not exist or is not a file.")
    counts = produce_file(settings, path, topic=args.topic or settings.topics.touchpoints,
                          progress=not args.quiet)
    print(orjson.dumps(counts).decode())
    return 0 if counts["failed"] == 0 else 1


def http_get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, orjson.loads(body)
        except orjson.JSONDecodeError:
            return e.code, {"error": body.decode(errors="replace")}
    except (urllib.error.URLError, OSError) as e:
        raise CliError(f"no Tusk worker answers at {url}: {e}.") from e


def cmd_profile_get(args: argparse.Namespace) -> int:
    from processors.identifiers import parse_key

    try:
        kind, value = parse_key(args.identifier)
    except ValueError:
        raise CliError(f"expected TYPE:VALUE (e.g. email:jo@example.com), got {args.identifier!r}.") from None
    path = (f"/profiles/id/{urllib.parse.quote(value, safe='')}" if kind == "id" else
            f"/profiles/{urllib.parse.quote(kind, safe='')}/{urllib.parse.quote(value, safe='')}")
    status, body = http_get(args.url.rstrip("/") + path)
    if status == 404:
        raise CliError(f"no profile found for {args.identifier}.")
    if status != 200:
        raise CliError(f"the worker answered {status}: {body.get('message', body)}.")
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _set_env(args, {"bootstrap": "KAFKA_BOOTSTRAP_SERVERS"})
    from stream.demo import run_demo

    return run_demo(profiles=args.profiles, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tusk", description="Tusk: real-time customer profiles on Kafka.")
    sub = ap.add_subparsers(dest="command", required=True)

    def kafka_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP_SERVERS)")
        p.add_argument("--prefix", help="topic prefix (default tusk.)")
        p.add_argument("--partitions", type=int, help="partitions of input and state topics (default 8)")
        p.add_argument("--app-id", help="Faust app id / consumer group (default tusk)")

    w = sub.add_parser("worker", help="run one worker replica (run more to scale)")
    kafka_opts(w)
    w.add_argument("--datadir", help="RocksDB folder of this replica (one per replica)")
    w.add_argument("--web-port", type=int, help="HTTP port of this replica (default 6066)")
    w.add_argument("--log-level", choices=["crit", "error", "warn", "info", "debug"],
                   help="default warn")
    w.set_defaults(func=cmd_worker)

    p = sub.add_parser("produce", help="send a JSON-lines file of events to the input topic")
    kafka_opts(p)
    p.add_argument("file")
    p.add_argument("--topic", help="target topic (default {prefix}touchpoints)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_produce)

    pr = sub.add_parser("profile", help="look profiles up")
    prs = pr.add_subparsers(dest="profile_command", required=True)
    g = prs.add_parser("get", help="a profile by TYPE:VALUE (or id:p_...)")
    g.add_argument("identifier")
    g.add_argument("--url", default=os.environ.get("TUSK_URL", "http://127.0.0.1:6066"),
                   help="any worker's HTTP address")
    g.set_defaults(func=cmd_profile_get)

    d = sub.add_parser("demo", help="local Kafka + a worker + a synthetic shop's stream, then a report")
    d.add_argument("--bootstrap", help="use this Kafka instead of starting a local one")
    d.add_argument("--profiles", type=int, default=400, help="synthetic customers (default 400)")
    d.add_argument("--seed", type=int, default=7)
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as e:
        print(f"tusk: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # settings errors and the like: one sentence, not a traceback
        from stream.settings import SettingsError

        if isinstance(e, SettingsError):
            print(f"tusk: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
