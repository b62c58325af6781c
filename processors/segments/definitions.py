"""Definition files and records: YAML/JSON in, a checked Catalog out.

`load_file` reads a file of computed traits and segments (schema
`definitions`), then compiles them all together, so an unknown reference or a
bad condition fails at load with the file, the line and what was expected.
`parse_record` does the same for one definition (HTTP PUT, topic value),
naming the path of the bad node.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

import schemas
from processors.common.config import ConfigError, line_of, load_yaml_with_nodes
from processors.common.predicates import DefinitionError, dotted
from processors.journeys.engine import Book
from processors.segments.catalog import Catalog

KINDS = ("segment", "computed_trait", "predict_model", "journey")


def _validator(kind: str) -> Draft202012Validator:
    if kind == "predict_model":  # written by `tusk predict fit`, not by definition files
        return Draft202012Validator(schemas.load("predict-model"))
    root = schemas.load("definitions")
    return Draft202012Validator({"$defs": root["$defs"], "$ref": f"#/$defs/{kind}"})


def parse_record(kind: str, spec: Any) -> dict[str, Any]:
    """One definition checked against the schema; DefinitionError(path, expected) otherwise."""
    if kind not in KINDS:
        raise DefinitionError(["kind"], f"one of {list(KINDS)}, got {kind!r}")
    if not isinstance(spec, Mapping):
        raise DefinitionError([], "a JSON object")
    errors = sorted(_validator(kind).iter_errors(dict(spec)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        raise DefinitionError(list(err.absolute_path), err.message)
    return {k: v for k, v in spec.items() if k != "kind"}


def load_file(path: str | Path, base: Catalog | None = None) -> tuple[list[dict[str, Any]],
                                                                       list[dict[str, Any]]]:
    """(computed traits, segments) of a file, compiled together with `base` to check them."""
    data, root = load_yaml_with_nodes(path, "definitions")
    traits = [dict(t) for t in data.get("computed_traits", [])]
    segments = [dict(s) for s in data.get("segments", [])]
    for section, items in (("computed_traits", traits), ("segments", segments)):
        _positions(path, root, section, items)
    try:
        (base or Catalog()).extended(traits, segments)
    except DefinitionError as e:
        raise _error_at(path, root, _indexed(e.path, traits, segments), e.expected) from None
    return traits, segments


def _positions(path: str | Path, root: yaml.Node | None, section: str,
               items: list[dict[str, Any]]) -> dict[str, int]:
    """id → position of each item of a file's `section`; ConfigError when an id comes twice."""
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item["id"] in seen:
            raise ConfigError(f"{path}:{line_of(root, [section, i, 'id'])}: at {section}[{i}].id: "
                              f"expected an id not used above (item {seen[item['id']]}).")
        seen[item["id"]] = i
    return seen


def _error_at(path: str | Path, root: yaml.Node | None, at: list[Any], expected: str) -> ConfigError:
    return ConfigError(f"{path}:{line_of(root, at)}: at {dotted(at)}: expected {expected}.")


def _indexed(path: list[Any], traits: list[dict[str, Any]], segments: list[dict[str, Any]]) -> list[Any]:
    """Catalog paths name definitions by id; files know them by position."""
    if len(path) >= 2 and path[0] in ("computed_traits", "segments"):
        items = traits if path[0] == "computed_traits" else segments
        for i, item in enumerate(items):
            if item["id"] == path[1]:
                return [path[0], i, *path[2:]]
    return path


def named_channels(node: Any) -> set[str]:
    """Every activation `channel` that definitions name, wherever it sits (a segment's
    destinations, a journey's send steps, ...)."""
    if isinstance(node, Mapping):
        found = {node["channel"]} if isinstance(node.get("channel"), str) else set()
        return found.union(*(named_channels(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(named_channels(v) for v in node))
    return set()


def load_journeys(path: str | Path, base: Catalog | None = None,
                  book: Book | None = None) -> list[dict[str, Any]]:
    """The journeys of a file, compiled with its segments and traits (over `base`) to check them."""
    traits, segments = load_file(path, base)
    data, root = load_yaml_with_nodes(path, "definitions")
    items = [dict(j) for j in data.get("journeys", [])]
    seen = _positions(path, root, "journeys", items)
    catalog = (base or Catalog()).extended(traits, segments)
    try:
        Book.build([*(s for k, s in (book or Book()).specs.items() if k not in seen), *items], catalog)
    except DefinitionError as e:
        at = e.path
        if len(at) >= 2 and at[0] == "journeys" and at[1] in seen:
            at = ["journeys", seen[at[1]], *at[2:]]
        raise _error_at(path, root, at, e.expected) from None
    return items
