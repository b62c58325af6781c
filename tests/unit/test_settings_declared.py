"""Every setting declared once (stream/runtime/variables.py), read only through that declaration,
documented from it, and the CLI's flags passed on as arguments, not through os.environ."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from stream.cli.commands import build_parser, flag_env
from stream.ingest.collector import CollectorConfig
from stream.runtime import variables as var
from stream.runtime.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"(TUSK_[A-Z0-9_]*[A-Z0-9]|KAFKA_BOOTSTRAP_SERVERS)")
GENERATED = "docs/reference/settings.md"


def tree_files() -> list[str]:
    """The files of the tree (tracked, and new ones git does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    return sorted({f for f in listed if (REPO / f).is_file()})


def named_anywhere() -> dict[str, list[str]]:
    """Every TUSK_* name (and KAFKA_BOOTSTRAP_SERVERS) in any text file of the tree: Python
    anywhere, the Makefile, deploy/, the README, the docs. Name → the files naming it."""
    found: dict[str, list[str]] = {}
    for rel in tree_files():
        if rel in (GENERATED, "stream/runtime/variables.py"):
            continue
        try:
            text = (REPO / rel).read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for name in sorted(set(NAME.findall(text))):
            found.setdefault(name, []).append(rel)
    return found


def _in_family(name: str) -> bool:
    return any(name.startswith(f) or f.startswith(name) for f in var.FAMILIES)


def test_the_scan_covers_the_makefile_deploy_readme_and_code() -> None:
    assert "Makefile" in tree_files()  # read, though it names no setting today
    where = {f for files in named_anywhere().values() for f in files}
    assert "README.md" in where and "tests/conftest.py" in where
    assert any(w.startswith("deploy/") for w in where) and any(w.startswith("stream/") for w in where)


def test_every_name_anywhere_in_the_tree_is_declared_and_documented() -> None:
    documented = (REPO / GENERATED).read_text()
    for name, files in sorted(named_anywhere().items()):
        where = files[0]
        if _in_family(name):
            continue
        assert name in var.DECLARED, (
            f"{name} appears in {where} but is not declared: add Setting({name!r}, \"<default>\", "
            f"\"<one line of doc>\", \"<worker|collector|CLI>\", \"Settings.<field>\" or None) to "
            f"SETTINGS in stream/runtime/variables.py, then run python -m stream.cli.docs.")
        assert f"`{name}`" in documented, (f"{name} is declared but not in {GENERATED}: "
                                           "python -m stream.cli.docs")


def test_each_name_is_declared_once_with_a_line_of_doc() -> None:
    names = [s.name for s in var.SETTINGS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for s in var.SETTINGS:
        assert s.meaning.strip() and s.used_by.strip(), s.name


def _product_sources() -> list[Path]:
    return [REPO / f for f in tree_files()
            if f.endswith(".py") and f.startswith(("stream/", "processors/"))
            and f != "stream/runtime/variables.py"]


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


def test_code_reads_settings_only_through_the_declaration() -> None:
    """No `os.environ[...]`, `os.environ.get(...)` or `os.getenv(...)` of a declared name outside
    stream/runtime/variables.py: the default and the doc live in one place."""
    offenders = []
    for path in _product_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            arg: ast.AST | None = None
            if isinstance(node, ast.Subscript) and _is_environ(node.value) and not isinstance(
                    node.ctx, ast.Del):
                arg = node.slice
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    (node.func.attr == "get" and _is_environ(node.func.value))
                    or (node.func.attr == "getenv" and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "os")) and node.args:
                arg = node.args[0]
            if arg is not None and not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                                        and not NAME.fullmatch(arg.value)):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"read the setting through stream/runtime/variables.py: {offenders}"


def test_no_command_writes_the_environment() -> None:
    """Flags travel as arguments: only the docs generator (its own process) edits os.environ."""
    offenders = []
    for path in _product_sources():
        if path.name == "docs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_environ(
                    node.func.value) and node.func.attr in ("update", "setdefault", "clear", "pop"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Assign | ast.Delete) and any(
                    isinstance(t, ast.Subscript) and _is_environ(t.value) for t in node.targets):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    node.func.attr == "putenv"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize("setting", [s for s in var.SETTINGS if s.field], ids=lambda s: s.name)
def test_the_dataclass_defaults_are_the_declared_ones(setting: var.Setting) -> None:
    assert setting.field is not None
    owner, attr = setting.field.split(".")
    if owner == "Settings":
        built, declared = Settings(), Settings.from_env({})
    else:
        built, declared = CollectorConfig(), CollectorConfig.from_env(Settings(), {})
    assert getattr(built, attr) == getattr(declared, attr), (
        f"{setting.field} defaults to {getattr(built, attr)!r} but stream/runtime/variables.py declares "
        f"{setting.name}={setting.default!r}: correct one of them.")


def test_an_undeclared_name_is_refused() -> None:
    undeclared = "TUSK_" + "NOBODY_DECLARED_THIS"  # built, or the tree scan above would find it
    with pytest.raises(KeyError, match="not declared"):
        var.text(undeclared, {})
    with pytest.raises(KeyError, match="not declared"):
        var.with_flags({undeclared: "1"}, {})


def test_cli_flags_reach_the_settings_without_touching_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if NAME.fullmatch(n)]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["worker", "--partitions", "3", "--prefix", "t1.", "--web-port", "7001",
                                      "--bootstrap", "kafka:9092", "--log-level", "debug"])
    from stream.cli import commands as cli

    before = dict(__import__("os").environ)
    env = flag_env(args, {**cli.COMMON_ENV, "web_port": "TUSK_WEB_PORT", "log_level": "TUSK_LOG_LEVEL"})
    assert dict(__import__("os").environ) == before
    s = Settings.from_env(env)
    assert (s.partitions, s.topic_prefix, s.web_port, s.bootstrap, s.log_level) == (
        3, "t1.", 7001, "kafka:9092", "debug")
    assert s.datadir == Path(".tusk/worker-7001")  # the default that follows the port
    unflagged = Settings.from_env(flag_env(build_parser().parse_args(["produce", "f.jsonl"]), cli.COMMON_ENV))
    assert dataclasses.replace(unflagged) == Settings.from_env({})
    with pytest.raises(SettingsError, match="TUSK_PARTITIONS='0': expected at least 1"):
        Settings.from_env(flag_env(build_parser().parse_args(["produce", "f", "--partitions", "0"]),
                                   cli.COMMON_ENV))
