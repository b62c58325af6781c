"""`tusk` command line. Errors end the command with exit 1 and one readable sentence."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from stream.cli.base import (
    COMMON_ENV,
    Batches,
    CliError,
    apply_definitions,
    delete_definition,
    flag_env,
    http_get,
    in_force_and_live,
)


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.runtime.memory import limit_arenas, trim_periodically

    # before any Kafka client: glibc fixes the arena count when a second thread first allocates
    limit_arenas()
    trim_periodically()
    env = flag_env(args, {**COMMON_ENV, "datadir": "TUSK_DATADIR", "web_port": "TUSK_WEB_PORT",
                    "log_level": "TUSK_LOG_LEVEL"})
    from stream.kafka.clients import ensure_topics
    from stream.runtime.settings import Settings

    settings = Settings.from_env(env)
    from stream.kafka.security import KafkaSecurityError, faust_credentials

    try:  # Faust's aiokafka clients get the same login, or the worker does not start
        faust_credentials(settings.kafka_extra)
    except KafkaSecurityError as e:
        raise CliError(str(e)) from None
    if settings.identity_config:
        from processors.common.config import ConfigError
        from processors.identity.graph import load_identity_config

        try:
            load_identity_config(settings.identity_config, settings.partitions)
        except ConfigError as e:
            raise CliError(str(e)) from None
    if settings.predict_config:
        from processors.common.config import ConfigError
        from processors.predict.models import load_config

        try:
            load_config(settings.predict_config)
        except ConfigError as e:
            raise CliError(str(e)) from None
    try:
        ensure_topics(settings)
    except Exception as e:
        raise CliError(f"cannot reach Kafka at {settings.bootstrap} to create topics: {e}") from e
    from stream.runtime.worker import run

    run(settings)
    return 0


def cmd_collector(args: argparse.Namespace) -> int:
    env = flag_env(args, {**COMMON_ENV, "host": "TUSK_COLLECTOR_HOST", "port": "TUSK_COLLECTOR_PORT",
                    "log_level": "TUSK_LOG_LEVEL"})
    from stream.ingest.collector import CollectorConfig, run
    from stream.kafka.clients import ensure_topics
    from stream.runtime.settings import Settings

    settings = Settings.from_env(env)
    config = CollectorConfig.from_env(settings, env)
    try:
        ensure_topics(settings)
    except Exception as e:
        raise CliError(f"cannot reach Kafka at {settings.bootstrap} to create topics: {e}") from e
    try:
        run(settings, config)
    except OSError as e:
        raise CliError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}.") from e
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    env = flag_env(args, COMMON_ENV)
    from stream.ingest.produce import produce_file
    from stream.runtime.settings import Settings

    settings = Settings.from_env(env)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} does not exist or is not a file.")
    counts = produce_file(settings, path, topic=args.topic or settings.topics.touchpoints,
                          progress=not args.quiet)
    print(orjson.dumps(counts).decode())
    return 0 if counts["failed"] == 0 else 1


def cmd_profile_get(args: argparse.Namespace) -> int:
    from processors.ingest.identifiers import parse_key

    try:
        kind, value = parse_key(args.identifier)
    except ValueError:
        raise CliError(f"expected TYPE:VALUE (e.g. email:jo@example.com), got {args.identifier!r}.") from None
    path = (f"/profiles/id/{urllib.parse.quote(value, safe='')}" if kind == "id" else
            f"/profiles/{urllib.parse.quote(kind, safe='')}/{urllib.parse.quote(value, safe='')}")
    status, body = http_get(args.url.rstrip("/") + path + getattr(args, "suffix", ""))
    if status == 404:
        raise CliError(f"no profile found for {args.identifier}.")
    if status != 200:
        raise CliError(f"the worker answered {status}: {body.get('message', body)}.")
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_segments_apply(args: argparse.Namespace) -> int:
    from processors.segments.definitions import load_file

    def load(reader: Any) -> Batches:
        traits, segments = load_file(args.file, base=reader.catalog)
        return [("computed_trait", traits), ("segment", segments)]

    settings, applied = apply_definitions(args, load)
    traits, segments = applied["computed_trait"], applied["segment"]
    print(f"applied {len(traits)} computed trait(s) and {len(segments)} segment(s) "
          f"to {settings.topics.segments}")
    if segments and not args.no_wait:
        _follow_backfill(args.url.rstrip("/"), segments, args.timeout)
    return 0


def _follow_backfill(url: str, segments: list[dict[str, Any]], timeout: float) -> None:
    """Show each segment's backfill across all workers until every partition is done."""
    import time

    from rich.progress import Progress

    try:
        http_get(f"{url}/health", timeout=3)
    except CliError:
        print(f"no worker answers at {url}: the backfill runs when workers read the definitions")
        return
    deadline = time.monotonic() + timeout
    with Progress() as bar:
        task = bar.add_task("backfill (partitions)", total=None)
        while time.monotonic() < deadline:
            states = []
            for spec in segments:
                status, body = http_get(f"{url}/segments/{urllib.parse.quote(spec['id'], safe='')}")
                live = status == 200 and body.get("condition") == spec["condition"]
                states.append((spec["id"], live, body if status == 200 else {}))
            if all(live for _, live, _ in states):
                fill = states[0][2]["backfill"]
                bar.update(task, total=fill["partitions"], completed=fill["partitions_done"])
                if fill["partitions_done"] >= fill["partitions"]:
                    break
            time.sleep(0.5)
        else:
            raise CliError(f"the backfill did not finish within {timeout:.0f}s; see GET {url}/segments.")
    for sid, _, _ in states:
        _, body = http_get(f"{url}/segments/{urllib.parse.quote(sid, safe='')}/size")
        print(f"  {sid}: {body.get('size')} member(s)")


def cmd_segments_list(args: argparse.Namespace) -> int:
    reader, sizes = in_force_and_live(args, "/segments", "size")
    cat = reader.catalog
    for tid in sorted(cat.trait_specs):
        spec = cat.trait_specs[tid]
        what = spec.get("formula") or f"{spec.get('aggregate')} {spec.get('event', '')}".strip()
        print(f"computed  {tid:<28} {what}")
    for sid in sorted(cat.segment_specs):
        spec = cat.segment_specs[sid]
        size = sizes.get(sid)
        members = f"  ({size} members)" if size is not None else ""
        print(f"segment   {sid:<28} {spec.get('name', '')}{members}")
    model = cat.predict.model
    if model is not None:
        print(f"model     {'predict:model':<28} BG/NBD + Gamma-Gamma in {model.unit}s, "
              f"fitted {model.version}")
    for key, why in sorted(reader.skipped.items()):
        print(f"skipped   {key:<28} {why}")
    return 0


def cmd_segments_delete(args: argparse.Namespace) -> int:
    kind = "computed_trait" if args.computed else "segment"

    def exists(reader: Any) -> bool:
        return args.id in (reader.catalog.trait_specs if args.computed else reader.catalog.segment_specs)

    return delete_definition(args, kind, exists, lambda reader: reader.catalog.delete(kind, args.id),
                             "is still used by another definition")


def cmd_privacy(args: argparse.Namespace) -> int:
    env = flag_env(args, COMMON_ENV)
    from processors.privacy.requests import privacy_request
    from stream.privacy.client import submit
    from stream.runtime.settings import Settings

    try:
        req = privacy_request(orjson.dumps({"request_id": "cli", "type": args.action,
                                            "identifier": args.identifier}))
    except ValueError as e:
        raise CliError(f"{args.identifier!r} is not a usable identifier ({e}).") from None
    settings = Settings.from_env(env)
    try:
        result = submit(settings, args.action, req["identifier"], timeout=args.timeout)
    except Exception as e:
        raise CliError(f"cannot reach Kafka at {settings.bootstrap}: {e}") from e
    if result is None:
        raise CliError(f"no result within {args.timeout:.0f}s; is a worker running?")
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if result.get("status") == "not_found":
        raise CliError(f"no profile has {req['identifier'].split(':', 1)[0]} with that value.")
    return 0 if result.get("status") == "done" else 1


def cmd_predict_fit(args: argparse.Namespace) -> int:
    env = flag_env(args, COMMON_ENV)
    from stream.cli.predict import fit_cluster, publish
    from stream.runtime.settings import Settings

    result = fit_cluster(args.url, args.until, args.unit, args.timeout)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if not args.no_publish:
        settings = Settings.from_env(env)
        publish(settings, result)
        print(f"published to {settings.topics.segments} as predict:model", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo.session import run_demo

    return run_demo(profiles=args.profiles, seed=args.seed, bootstrap=args.bootstrap)


def build_parser() -> argparse.ArgumentParser:
    from stream.runtime.variables import text

    url_default = text("TUSK_URL")
    ap = argparse.ArgumentParser(prog="tusk", description="Tusk: real-time customer profiles on Kafka.")
    sub = ap.add_subparsers(dest="command", required=True)

    def kafka_opts(p: argparse.ArgumentParser, url: str | None = None, serves: bool = False) -> None:
        """The Kafka options; with `url`, a worker's address too (--url, default `url`); a process
        that `serves` gets --log-level."""
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP_SERVERS)")
        p.add_argument("--prefix", help="topic prefix (default tusk.)")
        p.add_argument("--partitions", type=int, help="partitions of input and state topics (default 8)")
        p.add_argument("--app-id", help="Faust app id / consumer group (default tusk)")
        if url is not None:
            p.add_argument("--url", default=url)
        if serves:
            p.add_argument("--log-level", choices=["crit", "error", "warn", "info", "debug"],
                           help="default warn")

    w = sub.add_parser("worker", help="run one worker replica (run more to scale)")
    kafka_opts(w, serves=True)
    w.add_argument("--datadir", help="RocksDB folder of this replica (one per replica)")
    w.add_argument("--web-port", type=int, help="HTTP port of this replica (default 6066)")
    w.set_defaults(func=cmd_worker)

    c = sub.add_parser("collector", help="Segment-compatible HTTP ingest (POST /v1/batch, /v1/track, ...)")
    kafka_opts(c, serves=True)
    c.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    c.add_argument("--port", type=int, help="HTTP port (default 8088)")
    c.set_defaults(func=cmd_collector)

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
    g.add_argument("--url", default=url_default,
                   help="any worker's HTTP address")
    g.set_defaults(func=cmd_profile_get)
    ex = prs.add_parser("explain", help="why: the event behind each identifier, the merges, the "
                        "conditions of each segment that hold")
    ex.add_argument("identifier")
    ex.add_argument("--url", default=url_default,
                    help="any worker's HTTP address")
    ex.set_defaults(func=cmd_profile_get, suffix="/explain")

    sg = sub.add_parser("segments", help="apply, list and delete segments and computed traits")
    sgs = sg.add_subparsers(dest="segments_command", required=True)
    a = sgs.add_parser("apply", help="write the definitions of a YAML file (then show the backfill)")
    kafka_opts(a)
    a.add_argument("file")
    a.add_argument("--url", default=url_default, help="a worker's HTTP address, to follow the backfill")
    a.add_argument("--no-wait", action="store_true", help="do not wait for the backfill")
    a.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the backfill")
    a.set_defaults(func=cmd_segments_apply)
    ls = sgs.add_parser("list", help="the definitions in force (with sizes when a worker answers)")
    kafka_opts(ls, url_default)
    ls.set_defaults(func=cmd_segments_list)
    de = sgs.add_parser("delete", help="delete a segment (or with --computed, a computed trait)")
    kafka_opts(de)
    de.add_argument("id")
    de.add_argument("--computed", action="store_true")
    de.set_defaults(func=cmd_segments_delete)

    from stream.cli import journeys as journeys_cli

    journeys_cli.add_parser(sub, kafka_opts, url_default)

    pv = sub.add_parser("privacy", help="export or erase a person's data, by any identifier")
    kafka_opts(pv)
    pv.add_argument("action", choices=["export", "erase"])
    pv.add_argument("identifier", help="TYPE:VALUE, e.g. email:jo@example.com")
    pv.add_argument("--timeout", type=float, default=60.0)
    pv.set_defaults(func=cmd_privacy)

    pd = sub.add_parser("predict", help="fit the purchase models behind p_alive, expected orders, CLV")
    pds = pd.add_subparsers(dest="predict_command", required=True)
    pf = pds.add_parser("fit", help="fit BG/NBD and Gamma-Gamma on every customer, print and publish")
    kafka_opts(pf)
    pf.add_argument("--until", help="last day of the calibration period (YYYY-MM-DD; default: today)")
    pf.add_argument("--unit", choices=["day", "week"], default="week", help="time unit (default week)")
    pf.add_argument("--url", default=url_default, help="any worker's HTTP address")
    pf.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the summaries")
    pf.add_argument("--no-publish", action="store_true", help="print the parameters only")
    pf.set_defaults(func=cmd_predict_fit)
    from stream.cli import identity as identity_cli

    identity_cli.register(sub, url_default)

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
        from stream.runtime.settings import SettingsError

        if isinstance(e, SettingsError):
            print(f"tusk: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
