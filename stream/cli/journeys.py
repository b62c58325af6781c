"""`tusk journeys apply|list|delete`: journey definitions on the definitions topic."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from stream.cli.base import (
    Batches,
    CliError,
    apply_definitions,
    delete_definition,
    http_get,
    in_force_and_live,
)


def cmd_apply(args: argparse.Namespace) -> int:
    """The file's computed traits and segments (journeys read them), then its journeys."""
    from processors.segments.definitions import load_file, load_journeys

    def load(reader: Any) -> Batches:
        traits, segments = load_file(args.file, base=reader.catalog)
        journeys = load_journeys(args.file, base=reader.catalog, book=reader.journeys)
        if not journeys:
            raise CliError(f"{args.file} defines no journeys (a `journeys:` list).")
        return [("computed_trait", traits), ("segment", segments), ("journey", journeys)]

    settings, applied = apply_definitions(args, load)
    traits, segments, journeys = applied["computed_trait"], applied["segment"], applied["journey"]
    print(f"applied {len(journeys)} journey(s) ({', '.join(j['id'] for j in journeys)}), "
          f"{len(traits)} computed trait(s) and {len(segments)} segment(s) to {settings.topics.segments}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    reader, live = in_force_and_live(args, "/journeys", "active")
    for jid, spec in reader.journeys.specs.items():
        active = f"  ({live[jid]} in it)" if live.get(jid) is not None else ""
        steps = " → ".join(str(s["id"]) for s in spec["steps"])
        print(f"journey   {jid:<28} {steps}{active}")
    for key, why in sorted(reader.skipped.items()):
        if key.startswith("journey:"):
            print(f"skipped   {key:<28} {why}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    return delete_definition(args, "journey", lambda reader: args.id in reader.journeys.specs,
                             lambda reader: reader.journeys.delete(args.id, reader.catalog),
                             "is still the target of a move")


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
    kafka_opts(ls, url_default)
    ls.set_defaults(func=cmd_list)
    sh = js.add_parser("show", help="a journey's live counts per step (GET /journeys/{id})")
    sh.add_argument("id")
    sh.add_argument("--url", default=url_default)
    sh.set_defaults(func=cmd_show)
    de = js.add_parser("delete", help="delete a journey (its customers' positions go with it)")
    kafka_opts(de)
    de.add_argument("id")
    de.set_defaults(func=cmd_delete)
