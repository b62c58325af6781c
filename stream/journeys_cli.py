"""`tusk journeys apply|list|delete`: journey definitions on the definitions topic."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from stream.cli import COMMON_ENV, CliError, _current_catalog, _set_env, http_get


def cmd_apply(args: argparse.Namespace) -> int:
    """The file's computed traits and segments (journeys read them), then its journeys."""
    _set_env(args, COMMON_ENV)
    from processors.config import ConfigError
    from processors.definitions import load_file, load_journeys
    from stream.definitions import produce_definition
    from stream.kafka_io import ensure_topics
    from stream.settings import Settings

    settings = Settings.from_env()
    try:
        ensure_topics(settings)
    except Exception as e:
        raise CliError(f"cannot reach Kafka at {settings.bootstrap} to create topics: {e}") from e
    reader = _current_catalog(settings)
    try:
        traits, segments = load_file(args.file, base=reader.catalog)
        journeys = load_journeys(args.file, base=reader.catalog, book=reader.journeys)
    except ConfigError as e:
        raise CliError(str(e)) from None
    if not journeys:
        raise CliError(f"{args.file} defines no journeys (a `journeys:` list).")
    for kind, items in (("computed_trait", traits), ("segment", segments), ("journey", journeys)):
        for spec in items:
            produce_definition(settings, kind, spec["id"], spec)
    print(f"applied {len(journeys)} journey(s) ({', '.join(j['id'] for j in journeys)}), "
          f"{len(traits)} computed trait(s) and {len(segments)} segment(s) to {settings.topics.segments}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    _set_env(args, COMMON_ENV)
    from stream.settings import Settings

    reader = _current_catalog(Settings.from_env())
    live: dict[str, Any] = {}
    try:
        status, body = http_get(args.url.rstrip("/") + "/journeys", timeout=5)
        if status == 200:
            live = {j["id"]: j.get("active") for j in body["journeys"]}
    except CliError:
        pass
    for jid, spec in reader.journeys.specs.items():
        active = f"  ({live[jid]} in it)" if live.get(jid) is not None else ""
        steps = " → ".join(str(s["id"]) for s in spec["steps"])
        print(f"journey   {jid:<28} {steps}{active}")
    for key, why in sorted(reader.skipped.items()):
        if key.startswith("journey:"):
            print(f"skipped   {key:<28} {why}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _set_env(args, COMMON_ENV)
    from processors.predicates import DefinitionError
    from stream.definitions import produce_definition
    from stream.settings import Settings

    settings = Settings.from_env()
    reader = _current_catalog(settings)
    if args.id not in reader.journeys.specs:
        raise CliError(f"there is no journey {args.id!r}.")
    try:
        reader.journeys.delete(args.id, reader.catalog)
    except DefinitionError as e:
        raise CliError(f"{args.id!r} is still the target of a move ({e}).") from None
    produce_definition(settings, "journey", args.id, None)
    print(f"deleted journey {args.id}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    status, body = http_get(f"{args.url.rstrip('/')}/journeys/{urllib.parse.quote(args.id, safe='')}")
    if status != 200:
        raise CliError(f"the worker answered {status}: {body.get('message', body)}.")
    print(f"journey {body['id']}: {body['active']} in it now")
    print(f"  {'step':<24} {'entered':>8} {'waiting':>8} {'converted':>9} {'exited':>7} {'moved':>6}")
    for s in body["steps_live"]:
        print(f"  {s['step']:<24} {s['entered']:>8} {s['waiting']:>8} {s['converted']:>9} "
              f"{s['exited']:>7} {s['moved']:>6}")
    return 0


def add_parser(sub: Any, kafka_opts: Any, url_default: str) -> None:
    jp = sub.add_parser("journeys", help="apply, list, show and delete journeys")
    js = jp.add_subparsers(dest="journeys_command", required=True)
    a = js.add_parser("apply", help="write the journeys of a YAML file (with its segments and traits)")
    kafka_opts(a)
    a.add_argument("file")
    a.set_defaults(func=cmd_apply)
    ls = js.add_parser("list", help="the journeys in force (with how many are in each when a worker answers)")
    kafka_opts(ls)
    ls.add_argument("--url", default=url_default)
    ls.set_defaults(func=cmd_list)
    sh = js.add_parser("show", help="a journey's live counts per step (GET /journeys/{id})")
    sh.add_argument("id")
    sh.add_argument("--url", default=url_default)
    sh.set_defaults(func=cmd_show)
    de = js.add_parser("delete", help="delete a journey (its customers' positions go with it)")
    kafka_opts(de)
    de.add_argument("id")
    de.set_defaults(func=cmd_delete)
