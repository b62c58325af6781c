"""docs/reference/ is generated from the code (python -m stream.cli.docs) and cannot drift from it."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream.cli.docs import SETTINGS
from stream.ingest.collector import CollectorConfig
from stream.runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"(TUSK_[A-Z0-9_]*[A-Z0-9]|KAFKA_BOOTSTRAP_SERVERS)")
PREFIX = re.compile(r"TUSK_[A-Z0-9_]+_")  # names built at run time (f"TUSK_KAFKA_{...}")
FAMILIES = tuple(s.name.split("<")[0] for s in SETTINGS if "<" in s.name)  # TUSK_KAFKA_<NAME>


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not NAME.fullmatch(k)}


def test_committed_reference_equals_the_generated_one() -> None:
    done = subprocess.run([sys.executable, "-m", "stream.cli.docs", "--check"], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr.strip()


def settings_read() -> dict[str, str]:
    """Every TUSK_* name the code reads (string constants in stream/, processors/ and the tests'
    conftest) or the deployment sets (deploy/), with the first file that names it."""
    found: dict[str, str] = {}
    sources = [p for p in [*REPO.glob("stream/**/*.py"), *REPO.glob("processors/**/*.py"),
                           REPO / "tests" / "conftest.py"]
               if p.name != "variables.py"]  # the declarations themselves
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    NAME.fullmatch(node.value) or PREFIX.fullmatch(node.value)):
                found.setdefault(node.value, str(path.relative_to(REPO)))
    for path in sorted([*REPO.glob("deploy/k8s/*.yaml"), REPO / "deploy" / "docker-compose.yml"]):
        for name in NAME.findall(path.read_text()):
            found.setdefault(name, str(path.relative_to(REPO)))
    return {n: where for n, where in found.items()
            if not any(n.startswith(f) or f.startswith(n) for f in FAMILIES)}


def test_every_setting_read_is_declared() -> None:
    read = settings_read()
    declared = {s.name for s in SETTINGS}
    assert len(read) >= 30, read  # the scan sees the settings
    for name, where in sorted(read.items()):
        assert not name.endswith("_"), (
            f"{where} builds variable names from {name!r}: add Setting({name + '<WHAT>'!r}, ...) to "
            f"SETTINGS in stream/runtime/variables.py, saying what <WHAT> stands for, then run "
            f"python -m stream.cli.docs.")
        assert name in declared, (
            f"{name} is read in {where} but not documented: add Setting({name!r}, \"<default>\", "
            f"\"<meaning>\", \"<worker|collector|CLI>\", \"Settings.<field>\" or None) to SETTINGS in "
            f"stream/runtime/variables.py, then run python -m stream.cli.docs and commit "
            f"docs/reference/settings.md.")
    for name in sorted(n for n in declared - set(read) if "<" not in n):
        raise AssertionError(f"{name} is in SETTINGS of stream/runtime/variables.py but nothing reads it "
                             f"any more: "
                             f"remove it, then run python -m stream.cli.docs.")


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.field], ids=lambda s: s.name)
def test_documented_defaults_are_the_real_ones(setting: object, monkeypatch: pytest.MonkeyPatch) -> None:
    s = setting
    assert hasattr(s, "field") and s.field is not None
    for name in os.environ:
        if NAME.fullmatch(name):
            monkeypatch.delenv(name)
    owner, attr = s.field.split(".")

    def value() -> object:
        settings = Settings.from_env()
        return getattr(settings if owner == "Settings" else CollectorConfig.from_env(settings), attr)

    real = value()
    monkeypatch.setenv(s.name, s.default)
    assert value() == real, (f"SETTINGS in stream/runtime/variables.py documents {s.name}={s.default!r} as "
                             f"the "
                             f"default, but the default of {s.field} is {real!r}: correct one of them.")
