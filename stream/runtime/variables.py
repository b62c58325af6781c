"""Every environment variable Tusk reads, declared once: name, default, who reads it, one line of doc.

`SETTINGS` is the declaration (the table in stream/runtime/settings.yaml); code reads a variable
only through the functions of this module (`text`, `integer`, `duration`, ...), which refuse a
name that is not declared and take the default from the declaration.
docs/reference/settings.md is generated from it
(`python -m stream.cli.docs`), and tests/unit/test_reference_docs.py checks that every `TUSK_*`
name anywhere in the tree is declared here and that the declared defaults are the real ones.

Every reader takes the environment as a parameter (`env`, default: the process's): the CLI
passes its flags by layering them over the environment (`with_flags`), never by writing
`os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from processors.common import timeutil
from processors.common.errors import TuskError


class SettingsError(TuskError, ValueError):
    """A setting with a value Tusk cannot use: one sentence naming it and what was expected."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    """as a user would write it; "" when unset means off / not used"""
    meaning: str
    used_by: str
    """worker, collector, CLI (the processes that read it)"""
    field: str | None = None
    """`Settings.<field>` or `CollectorConfig.<field>` it fills: the test checks the default"""


_TABLE = resources.files(__package__).joinpath("settings.yaml").read_text()
SETTINGS: tuple[Setting, ...] = tuple(Setting(**row) for row in yaml.safe_load(_TABLE))
"""The declaration, a table in stream/runtime/settings.yaml (data, read once at import)."""

DECLARED: dict[str, Setting] = {s.name: s for s in SETTINGS}
FAMILIES: tuple[str, ...] = tuple(s.name.split("<")[0] for s in SETTINGS if "<" in s.name)
"""name prefixes of variable families (`TUSK_KAFKA_` of `TUSK_KAFKA_<NAME>`)"""

Env = Mapping[str, str]


def declared(name: str) -> Setting:
    """The declaration of `name` (a family member resolves to its family); a name nobody declared
    is a bug in the caller, not the user's mistake."""
    found = DECLARED.get(name) or next(
        (DECLARED[s] for s in DECLARED if "<" in s and name.startswith(s.split("<")[0])), None)
    if found is None:
        raise KeyError(f"{name} is not declared in SETTINGS of stream/runtime/variables.py")
    return found


def _env(env: Env | None) -> Env:
    return os.environ if env is None else env


def with_flags(flags: Mapping[str, object | None], env: Env | None = None) -> dict[str, str]:
    """The environment with the command line's flags over it ({variable: value}; None: not given)."""
    merged = dict(_env(env))
    for name, value in flags.items():
        declared(name)
        if value is not None:
            merged[name] = str(value)
    return merged


def given(name: str, env: Env | None = None) -> str | None:
    """The value set for `name`, None when it is unset or empty."""
    declared(name)
    return _env(env).get(name) or None


def text(name: str, env: Env | None = None, default: str | None = None) -> str:
    """The value of `name` as given (even empty), else its declared default (or `default`, for a
    default that depends on another setting, such as TUSK_DATADIR's)."""
    setting = declared(name)
    value = _env(env).get(name)
    if value is not None:
        return value
    return setting.default if default is None else default


def integer(name: str, minimum: int = 0, env: Env | None = None) -> int:
    raw = given(name, env)
    if raw is None:
        return int(declared(name).default)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number.") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: expected at least {minimum}.")
    return value


def _duration(name: str, raw: str, minimum_ms: int) -> int:
    try:
        value = timeutil.parse_duration_ms(raw, name)
    except ValueError as e:
        raise SettingsError(str(e)) from None
    if value < minimum_ms:
        raise SettingsError(f"{name}={raw!r}: expected at least {minimum_ms} ms.")
    return value


def duration(name: str, minimum_ms: int = 0, env: Env | None = None) -> int:
    """Milliseconds of a duration (`500ms`, `10s`, `24h`, `30d`, `105w`), default: the declared one."""
    return _duration(name, text(name, env), minimum_ms)


def optional_duration(name: str, minimum_ms: int = 0, env: Env | None = None) -> int | None:
    raw = given(name, env)
    return None if raw is None else _duration(name, raw, minimum_ms)


def optional_path(name: str, env: Env | None = None) -> Path | None:
    raw = given(name, env)
    return None if raw is None else Path(raw)


def choice(name: str, allowed: tuple[str, ...], env: Env | None = None) -> str:
    value = text(name, env)
    if value not in allowed:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(allowed)}.")
    return value


def family(prefix: str, env: Env | None = None) -> dict[str, str]:
    """{variable: value} of a declared family (`TUSK_KAFKA_`), empty values left out."""
    if prefix not in FAMILIES:
        raise KeyError(f"{prefix}<...> is not declared in SETTINGS of stream/runtime/variables.py")
    return {k: v for k, v in sorted(_env(env).items()) if k.startswith(prefix) and len(k) > len(prefix) and v}
