"""YAML configuration files, validated against schemas/ with file:line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

import schemas
from processors.common.errors import TuskError


class YamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so `on:` (a destination's key) stays the string "on"."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class ConfigError(TuskError, ValueError):
    """`file:line: at path: expected …, got …` — one sentence a person can act on."""


def node_at(node: yaml.Node | None, path: list[Any]) -> yaml.Node | None:
    for step in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(step)), node)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            break
    return node


def _expected(err: ValidationError) -> str:
    v, want = err.validator, err.validator_value
    if v == "type":
        kinds = want if isinstance(want, list) else [want]
        return "a value of type " + " or ".join(str(k) for k in kinds) + f", got {err.instance!r}"
    if v == "enum":
        return f"one of {want}, got {err.instance!r}"
    if v == "minimum":
        return f"a number >= {want}, got {err.instance!r}"
    if v == "pattern":
        return f"a value matching {want}, got {err.instance!r}"
    if v == "additionalProperties":
        props = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
        allowed = sorted(props)
        return f"only the keys {allowed} ({err.message})"
    if v == "required":
        return err.message
    if v == "uniqueItems":
        return "no repeated items"
    if v == "minItems":
        return f"at least {want} item(s)"
    return err.message


def load_yaml(path: str | Path, schema: str) -> dict[str, Any]:
    """Parse and validate a YAML file; ConfigError names the file, the line and the expectation."""
    return load_yaml_with_nodes(path, schema)[0]


def line_of(root: yaml.Node | None, at: list[Any]) -> int:
    node = node_at(root, at)
    return node.start_mark.line + 1 if node is not None else 1


def load_yaml_with_nodes(path: str | Path, schema: str) -> tuple[dict[str, Any], yaml.Node | None]:
    """load_yaml, also returning the YAML node tree (to place later, semantic errors on a line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the file ({e.strerror}).") from None
    try:
        root = yaml.compose(text, Loader=YamlLoader)
        data = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)}).") from None
    if data is None:
        data = {}
    errors = sorted(Draft202012Validator(schemas.load(schema)).iter_errors(data),
                    key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        err = errors[0]
        at = list(err.absolute_path)
        node = node_at(root, at)
        line = node.start_mark.line + 1 if node is not None else 1
        dotted = ".".join(map(str, at)) or "(top level)"
        raise ConfigError(f"{path}:{line}: at {dotted}: expected {_expected(err)}.")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level.")
    return dict(data), root
