"""The reference under docs/reference/, generated from the code so that it cannot drift.

    python -m stream.cli.docs           writes docs/reference/{settings,topics,messages,commands,http}.md
    python -m stream.cli.docs --check   exit 1, saying what to do, when a committed file differs

What comes from where:
  settings.md  stream/runtime/variables.py SETTINGS: the one declaration of every TUSK_* variable, which
               the code reads them through (tests/unit/test_reference_docs.py checks that every
               TUSK_* name in the tree is declared, and the declared defaults against
               Settings.from_env and CollectorConfig.from_env)
  topics.md    stream.kafka.clients.contract_topics (names and configs as created) + TOPICS below
  messages.md  every schemas/*.json (title, description, fields) + SCHEMAS below (where it is used)
  commands.md  stream.cli.commands.build_parser (every subcommand and option, with its help)
  http.md      the routes registered on the worker's Faust web app and the collector's aiohttp
               app + WORKER_ROUTES / COLLECTOR_ROUTES below (one line each)

A setting, topic, schema or route without its declaration here stops the generator with a
sentence saying what to add where.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from processors.common.errors import TuskError
from stream.runtime.variables import SETTINGS, Setting

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "reference"
SELF = "stream/cli/docs.py"


class DocsError(TuskError):
    """Something the reference cannot describe yet: the sentence says what to add where."""


# ------------------------------------------------------------------------------------ settings


def settings_md() -> str:
    def default(s: Setting) -> str:
        if not s.default:
            return "unset"
        return s.default if s.default.startswith("the ") else f"`{s.default}`"

    rows = [f"| `{s.name}` | {default(s)} | {s.used_by} | {s.meaning} |" for s in SETTINGS]
    return "\n".join([
        "# Settings", "",
        "Environment variables, read once at start and validated: a bad value stops the command "
        "with one sentence naming the variable and what was expected. Durations are written like "
        "`500ms`, `10s`, `5m`, `24h`, `30d`, `105w`. The commands' options (`--bootstrap`, "
        "`--partitions`, `--web-port`, …) override the same variables for that command. Each variable "
        "is declared once, in `stream/runtime/variables.py` (SETTINGS), which this table is generated "
        "from.", "",
        "| variable | default | read by | meaning |", "| --- | --- | --- | --- |", *rows, ""])


# ------------------------------------------------------------------------------------ topics


@dataclass(frozen=True)
class Topic:
    key: str
    value: str
    writers: str


TOPICS: dict[str, Topic] = {
    "touchpoints": Topic("any; the collector and `tusk produce` use the routing identifier (`user_id:u1`: "
                         "the highest-priority identifier), which lets a worker apply the event without "
                         "the internal hop",
                         "a touchpoint event, [touchpoint](messages.md#touchpoint)", "producers, collector"),
    "dlq": Topic("the input's key", "rejected input and why, [dlq](messages.md#dlq)", "workers"),
    "segments": Topic("segment id, `computed:<id>` for a computed trait, `journey:<id>` for a journey, "
                      "`predict:model` for the fitted prediction model", "a definition "
                      "([definitions](messages.md#definitions)), null deletes it", "CLI, HTTP API"),
    "profile_changes": Topic("profile id", "a segment entry or exit, a merge, the end of a membership, "
                             "an erasure: [profile-change](messages.md#profile-change)", "workers"),
    "privacy": Topic("request id", "[privacy-request](messages.md#privacy-request)",
                     "CLI, HTTP API, producers"),
    "privacy_results": Topic("request id", "[privacy-result](messages.md#privacy-result)", "workers"),
    "routed": Topic("the table key a record touches", "identity-protocol records (events, links, merges, "
                    "erasure steps): internal", "workers"),
    "changelog:identities": Topic("identifier key (`type:value`)", "profile id: the identity table, "
                                  "internal", "workers"),
    "changelog:profiles": Topic("profile id", "profile JSON: the profile table, internal", "workers"),
    "changelog:meta": Topic("per partition bookkeeping", "re-check deadlines, segment sizes, "
                            "watermarks: internal", "workers"),
}


def topics_md() -> str:
    from stream.kafka.clients import contract_topics
    from stream.kafka.topic_configs import TABLES
    from stream.runtime.settings import Settings, TopicName

    s = Settings()
    roles = {getattr(s.topics, attr): attr for attr in dir(type(s.topics))
             if isinstance(getattr(type(s.topics), attr, None), TopicName)}
    roles.update({f"{s.app_id}-{table}-changelog": f"changelog:{table}" for table in TABLES})
    rows = []
    for name, config in contract_topics(s).items():
        role = roles.get(name)
        if role is None or role not in TOPICS:
            raise DocsError(f"topic {name} (stream/kafka/clients.py contract_topics) has no description: add "
                            f"{(role or name)!r}: Topic(key, value, writers) to TOPICS in {SELF}, then run "
                            f"python -m stream.cli.docs.")
        t = TOPICS[role]
        conf = ", ".join(f"`{k}={v}`" for k, v in sorted(config.items())) or "broker defaults"
        rows.append(f"| `{name}` | {t.key} | {t.value} | {t.writers} | {conf} |")
    channel = s.topics.activations("<channel>")
    rows.append(f"| `{channel}` | profile id | a trigger, [trigger](messages.md#trigger) | workers | "
                f"created on a channel's first trigger, partitions and replication as above |")
    return "\n".join([
        "# Topics", "",
        f"Default names (`TUSK_TOPIC_PREFIX={s.topic_prefix}`, `TUSK_APP_ID={s.app_id}`). Every worker "
        "and the collector create the topics below when they are missing, with `TUSK_PARTITIONS` "
        f"partitions (default {s.partitions}) and `TUSK_REPLICATION` replicas (default "
        f"{s.replication}), and these configs:", "",
        "| topic | key | value | written by | configs |", "| --- | --- | --- | --- | --- |", *rows, "",
        "Values are UTF-8 JSON. Topics marked internal are the engine's own: their formats may "
        "change between versions.", ""])


# ------------------------------------------------------------------------------------ messages

SCHEMAS: dict[str, str] = {
    "touchpoint.schema.json": "records on the touchpoints topic; bodies of the collector's `/v1/*` routes",
    "dlq.schema.json": "records on the dlq topic",
    "trigger.schema.json": "records on the activations topics",
    "privacy-request.schema.json": "records on the privacy topic; `tusk privacy`, `POST /privacy/{action}`",
    "privacy-result.schema.json": "records on the privacy-results topic; the answer of `tusk privacy` "
                                  "and `POST /privacy/{action}`",
    "definitions.schema.json": "files of `tusk segments apply`; bodies of `PUT /segments/{id}` and "
                               "`PUT /computed-traits/{id}`; records on the segments topic",
    "profile.schema.json": "answers of `GET /profiles/...` and `tusk profile get`; the `profile` of a "
                           "privacy export",
    "profile-change.schema.json": "records on the profile-changes topic",
    "identity.schema.json": "the file named by `TUSK_IDENTITY_CONFIG`",
    "activation.schema.json": "the file named by `TUSK_ACTIVATION_CONFIG`",
    "journey-step.schema.json": "journey records on the profile-changes topic (`\"type\": \"journey\"`)",
    "predict.schema.json": "the file named by `TUSK_PREDICT_CONFIG` (what a purchase and a refund are)",
    "predict-model.schema.json": "the `predict:model` record on the segments topic, published by "
                                 "`tusk predict fit`; the answer of `GET /predict/model`",
}


IDENTIFIERS: dict[str, tuple[str, str]] = {
    "user_id": ("`userId`", "trimmed; integers as their digits"),
    "email": ("`traits.email`, `context.traits.email`", "trimmed, lower-cased; an invalid address stays a "
              "trait but is no identifier"),
    "phone": ("`traits.phone`, `context.traits.phone`", "E.164 (`phone_region` of identity.yaml for "
              "numbers without a country code); an invalid number is no identifier"),
    "device_id": ("`context.device.id`", "trimmed"),
    "external": ("`context.externalIds[]` (`{\"id\", \"type\"}`)", "the type lower-cased, other "
                 "characters as `_`: each type is its own identifier type, ranked here"),
    "anonymous_id": ("`anonymousId` (and an alias's `previousId`)", "trimmed"),
}
"""identifier type → (where on the event, normalisation), for every type of DEFAULT_PRIORITY."""


def identifiers_md() -> list[str]:
    from processors.ingest.identifiers import DEFAULT_BLOCKED, DEFAULT_PRIORITY

    missing = [t for t in DEFAULT_PRIORITY if t not in IDENTIFIERS]
    if missing:
        raise DocsError(f"identifier type {missing[0]!r} (processors/ingest/identifiers.py DEFAULT_PRIORITY) "
                        f"is not "
                        f"described: add {missing[0]!r}: (\"where on the event\", \"normalisation\") to "
                        f"IDENTIFIERS in {SELF}, then run python -m stream.cli.docs.")
    rows = [f"| {i} | `{t}` | {IDENTIFIERS[t][0]} | {IDENTIFIERS[t][1]} |"
            for i, t in enumerate(DEFAULT_PRIORITY, 1)]
    blocked = ", ".join(f"`{v}`" if v else "the empty string" for v in sorted(DEFAULT_BLOCKED))
    return ["## Identifiers", "",
            "Identity resolution reads these identifiers from an event, in this priority by default "
            "(the event is routed by the first it has; `identity.yaml` changes the order, adds "
            "per-profile limits and blocked values). A key on the wire, in lookups and in "
            "`tusk profile get` is `type:value`, e.g. `email:jo@example.com`.", "",
            "| priority | type | from | normalised |", "| --- | --- | --- | --- |", *rows, "",
            f"Values that never count as identifiers, whatever their type (case-insensitive): {blocked}. "
            "An event with no usable identifier goes to the DLQ (`no_identifier`).", ""]


def _type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    if "$ref" in spec:
        return f"see `{spec['$ref'].rsplit('/', 1)[-1]}`"
    t = spec.get("type")
    if isinstance(t, list):
        return " or ".join(t)
    if t:
        return f"{t}" + (f" ({spec['format']})" if "format" in spec else "")
    for combo in ("oneOf", "anyOf"):
        if combo in spec:
            return " or ".join(_type(s) for s in spec[combo])
    return "any"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _fields(schema: dict[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, spec in schema.get("properties", {}).items():
        if not isinstance(spec, dict):
            continue
        rows.append(f"| `{prefix}{name}` | {_type(spec)} | {'yes' if name in required else ''} | "
                    f"{_cell(spec.get('description', spec.get('title', '')))} |")
        if depth < 1 and isinstance(spec.get("properties"), dict):
            rows += _fields(spec, f"{prefix}{name}.", depth + 1)
    return rows


def messages_md() -> str:
    files = sorted((REPO / "schemas").glob("*.schema.json"))
    parts = ["# Messages and configuration files", "",
             "JSON Schemas (draft 2020-12) of the messages on the wire and of the configuration files, "
             "in [`schemas/`](../../schemas/). The tables list each schema's fields (and one level "
             "below); the schema files are the authority. Unknown fields of a touchpoint are kept.", ""]
    for path in files:
        if path.name not in SCHEMAS:
            raise DocsError(f"schemas/{path.name} is not described: add {path.name!r}: \"where it is used\" "
                            f"to SCHEMAS in {SELF}, then run python -m stream.cli.docs.")
        schema = json.loads(path.read_text())
        anchor = path.name.removesuffix(".schema.json")
        parts += [f"## {anchor}", "", f"**{_cell(schema.get('title', anchor))}**. Used for: "
                  f"{SCHEMAS[path.name]}. Schema: [`schemas/{path.name}`](../../schemas/{path.name}).", ""]
        if schema.get("description"):
            parts += [_cell(schema["description"]), ""]
        rows = _fields(schema)
        if rows:
            parts += ["| field | type | required | meaning |", "| --- | --- | --- | --- |", *rows, ""]
        defs = schema.get("$defs") or schema.get("definitions") or {}
        for name, spec in defs.items():
            sub = _fields(spec) if isinstance(spec, dict) else []
            if sub:
                parts += [f"`{name}`:", "", "| field | type | required | meaning |",
                          "| --- | --- | --- | --- |", *sub, ""]
    parts += identifiers_md()
    stale = sorted(set(SCHEMAS) - {p.name for p in files})
    if stale:
        raise DocsError(f"SCHEMAS in {SELF} describes {', '.join(stale)}, which schemas/ does not hold: "
                        f"remove the entry.")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ commands


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(full name, help, parser) of every leaf subcommand, in declaration order."""
    found: list[tuple[str, str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                nested = _subcommands(sub)
                if nested:
                    found += [(f"{name} {n}", h, p) for n, h, p in nested]
                else:
                    found.append((name, helps.get(name, ""), sub))
    return found


def commands_md() -> str:
    from stream.cli.commands import build_parser

    parts = ["# Commands", "",
             "`tusk <command>` (installed by `pip install -e .`, or `.venv/bin/tusk`). An error ends a "
             "command with exit code 1 and one sentence on stderr.", ""]
    for name, helptext, sub in _subcommands(build_parser()):
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        parts += [f"## tusk {name}", "", f"{_cell(helptext)}.", "", f"    {usage}", ""]
        rows = []
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
            notes = [f"one of {', '.join(map(str, action.choices))}"] if action.choices else []
            helptext = action.help or ""
            if action.default not in (None, False, argparse.SUPPRESS) and "default" not in helptext:
                notes.append(f"default {action.default}")
            extra = f" ({'; '.join(notes)})" if notes else ""
            rows.append(f"| {what} | {_cell(helptext)}{extra} |".replace("|  (", "| ("))
        if rows:
            parts += ["| argument | meaning |", "| --- | --- |", *rows, ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ HTTP

def _route_docs(app: str) -> dict[tuple[str, str], str]:
    table = yaml.safe_load(resources.files(__package__).joinpath("routes.yaml").read_text())
    return {(r["method"], r["path"]): r["doc"] for r in table[app]}


WORKER_ROUTES = _route_docs("worker")
"""What each route of the worker does (the table in stream/cli/routes.yaml)."""
COLLECTOR_ROUTES = _route_docs("collector")

_METHODS = ("get", "post", "put", "delete", "patch")


def worker_routes() -> list[tuple[str, str]]:
    """(method, path) of every route registered on the worker's web app."""
    from faust.web import View

    from stream.runtime.settings import Settings
    from stream.runtime.worker import build_worker

    app = build_worker(Settings())[0].app
    routes = []
    for path, view in app.web.views.items():
        own = [c for c in type(view).__mro__ if issubclass(c, View) and c is not View]  # not Faust's 405s
        routes += [(m.upper(), path) for m in _METHODS if any(m in c.__dict__ for c in own)]
    return routes


def collector_routes() -> list[tuple[str, str]]:
    from stream.ingest.collector import CollectorConfig, build_app
    from stream.runtime.settings import Settings

    app = build_app(Settings(), CollectorConfig(), sink=object())  # type: ignore[arg-type]
    return [(r.method, r.resource.canonical) for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None]


def _route_rows(routes: list[tuple[str, str]], docs: dict[tuple[str, str], str], where: str,
                table: str) -> list[str]:
    missing = [r for r in routes if r not in docs]
    if missing:
        method, path = missing[0]
        raise DocsError(f"{method} {path} is served ({where}) but not described: add "
                        f"({method!r}, {path!r}): \"what it does\" to {table} in {SELF}, then run "
                        f"python -m stream.cli.docs.")
    stale = [r for r in docs if r not in routes]
    if stale:
        raise DocsError(f"{table} in {SELF} describes {stale[0][0]} {stale[0][1]}, which is not served "
                        f"any more: remove the entry.")
    return [f"| `{m}` | `{p}` | {docs[(m, p)]} |" for m, p in sorted(routes, key=lambda r: (r[1], r[0]))]


def metrics_rows(prefix: str, exclude: str | None = None) -> list[str]:
    """Every Tusk metric registered (the modules define them at import), as table rows."""
    from prometheus_client import REGISTRY

    rows = []
    for metric in list(REGISTRY._collector_to_names):  # the metric objects themselves
        name, kind = getattr(metric, "_name", ""), getattr(metric, "_type", "")
        if not name.startswith(prefix) or (exclude and name.startswith(exclude)):
            continue
        shown = f"{name}_total" if kind == "counter" else name
        labels = ", ".join(f"`{label}`" for label in getattr(metric, "_labelnames", ()))
        rows.append(f"| `{shown}` | {kind} | {labels} | {_cell(getattr(metric, '_documentation', ''))} |")
    return sorted(rows)


def http_md() -> str:
    worker, collector = worker_routes(), collector_routes()  # imports the modules and their metrics
    head = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join([
        "# HTTP", "",
        "## Worker (every replica, `TUSK_WEB_PORT`, default 6066)", "",
        "Any worker answers any request: lookups are forwarded to the worker that owns the key. With "
        "`TUSK_API_TOKEN` set, every route but `/health`, `/metrics` and `/console` needs "
        "`Authorization: Bearer <token>`. Errors are JSON `{\"error\": reason, \"message\": sentence}`.", "",
        "| method | path | what it does |", "| --- | --- | --- |",
        *_route_rows(worker, WORKER_ROUTES, "stream/api/web.py, stream/api/console.py", "WORKER_ROUTES"),
        "", "Metrics of `GET /metrics` (besides the Python process's own):", "",
        *head, *metrics_rows("tusk_", exclude="tusk_collector_"), "",
        "## Collector (`tusk collector`, `TUSK_COLLECTOR_PORT`, default 8088)", "",
        "The write key is the HTTP basic-auth user (or `writeKey` in the body). Answers "
        "`{\"success\": true}` once Kafka acknowledged every event; errors are "
        "`{\"success\": false, \"code\", \"message\"}` with 400, 401, 413, 415 or 503.", "",
        "| method | path | what it does |", "| --- | --- | --- |",
        *_route_rows(collector, COLLECTOR_ROUTES, "stream/ingest/collector.py", "COLLECTOR_ROUTES"),
        "", "Metrics of the collector's `GET /metrics`:", "", *head, *metrics_rows("tusk_collector_"),
        ""])


# ------------------------------------------------------------------------------------ main

PAGES: dict[str, Callable[[], str]] = {
    "settings.md": settings_md, "topics.md": topics_md, "messages.md": messages_md,
    "commands.md": commands_md, "http.md": http_md,
}
HEADER = ("<!-- generated by `python -m stream.cli.docs` from the code: edit stream/cli/docs.py, "
          "not this file -->\n")


def generate() -> dict[str, str]:
    return {name: HEADER + page() for name, page in PAGES.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stream.cli.docs", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = ap.parse_args(argv)
    try:
        pages = generate()
    except DocsError as e:
        print(f"stream.cli.docs: {e}", file=sys.stderr)
        return 1
    stale = [name for name, text in pages.items()
             if not (OUT / name).is_file() or (OUT / name).read_text() != text]
    if args.check:
        if stale:
            print(f"stream.cli.docs: docs/reference/{', docs/reference/'.join(stale)} out of date: run "
                  f"python -m stream.cli.docs and commit the result.", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (OUT / name).write_text(pages[name])
    print(f"docs/reference: {len(stale)} of {len(pages)} files written")
    return 0


if __name__ == "__main__":
    # the reference shows defaults: the generator ignores this shell's TUSK_* settings
    for var in [v for v in os.environ if v.startswith("TUSK_") or v == "KAFKA_BOOTSTRAP_SERVERS"]:
        del os.environ[var]
    sys.exit(main())
