"""Record kinds (processors/common/records.py), handler registration, and the one error root."""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException
from faust.exceptions import FaustError

from processors import protocol
from processors.common import records
from processors.common.config import ConfigError
from processors.common.errors import Blame, DeliveryFailed, TuskError
from processors.common.records import Handlers, Kind, UnknownKind
from processors.identity import graph as identity
from processors.privacy import protocol as privacy
from stream.runtime.failures import blame, is_platform_failure
from stream.state.writeback import StateWriteFailed

REPO = Path(__file__).resolve().parents[2]

# each constructor against the literal the protocol wrote before the kinds had names
AS_BEFORE: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (records.event({"m": {"a": 1}, "ts": 5, "ids": [["email", "x"]]}),
     {"k": "E", "ev": {"m": {"a": 1}, "ts": 5, "ids": [["email", "x"]]}}),
    (records.apply({"m": {}}, ["email:x"], []), {"k": "A", "ev": {"m": {}}, "known": ["email:x"], "via": []}),
    (records.link("p_1"), {"k": "L", "pid": "p_1"}),
    (records.freeze("p_0", "email:x", "p_2"), {"k": "F", "s": "p_0", "link": "email:x", "req": "p_2"}),
    (records.merge({"id": "p_1"}, "n", None, None),
     {"k": "M", "snap": {"id": "p_1"}, "nonce": "n", "link": None, "req": None}),
    (records.restore({"id": "p_1"}, "n"), {"k": "X", "snap": {"id": "p_1"}, "nonce": "n"}),
    (records.drop_link("email:x", "p_3"), {"k": "U", "key": "email:x", "h": "p_3"}),
    (records.check("p_1"), {"k": "C", "pid": "p_1"}),
    (records.identity_back("email:x"), {"k": "I", "key": "email:x"}),
    (records.repoint("p_2", "p_1"), {"k": "R", "from": "p_2", "to": "p_1"}),
    (records.quarantine_op("release"), {"k": "O", "op": "release"}),
    (records.group_traits("g1", {"plan": "x"}, 7, "m1", "p_1"),
     {"k": "G", "gid": "g1", "traits": {"plan": "x"}, "ts": 7, "mid": "m1", "pid": "p_1"}),
    (records.account_traits("a_1", {"plan": "x"}, {}),
     {"k": "K", "aid": "a_1", "traits": {"plan": "x"}, "tt": {}}),
    (records.privacy_request("erase", "r1"), {"k": "P", "op": "erase", "rid": "r1"}),
    (records.profile_request("export", "r1", "ab"), {"k": "Q", "op": "export", "rid": "r1", "ih": "ab"}),
    (records.profile_request("erase", "expired:p_1:9"), {"k": "Q", "op": "erase", "rid": "expired:p_1:9"}),
    (records.erase_part("identity", ["p_1"], until=9),
     {"k": "Z", "what": "identity", "pids": ["p_1"], "until": 9}),
    (records.erase_part("member", ["p_1"]), {"k": "Z", "what": "member", "pids": ["p_1"]}),
    (records.erase_ack("r1"), {"k": "Y", "rid": "r1"}),
    (records.merged_via("p_2", "p_1"), {"k": "V", "loser": "p_2", "into": "p_1"}),
    (records.merged_via("p_2", "p_2", "p_2>p_1@0:7"),
     {"k": "V", "loser": "p_2", "into": "p_2", "refused": "p_2>p_1@0:7"}),
    (records.unlink_request("op1"), {"k": "N", "op": "op1"}),
    (records.split("email:x", "op1"), {"k": "S", "key": "email:x", "op": "op1"}),
    (records.journal_ask("p_1", "op1"), {"k": "J", "to": "p_1", "op": "op1"}),
    (records.journal("p_2", "op1", [], True, 0),
     {"k": "W", "from": "p_2", "op": "op1", "events": [], "complete": True, "n": 0}),
    (records.build({"id": "p_4"}, []), {"k": "H", "profile": {"id": "p_4"}, "events": []}),
    (records.tick(), {"k": "T"}),
    (records.tick({"0": [5, False]}, 8), {"k": "T", "src": {"0": [5, False]}, "of": 8}),
    (records.backfill("fp", None), {"k": "B", "fp": "fp", "after": None}),
]


@pytest.mark.parametrize(("built", "before"), AS_BEFORE, ids=[b["k"] for _, b in AS_BEFORE])
def test_each_record_encodes_byte_for_byte_as_before(built: dict[str, Any], before: dict[str, Any]) -> None:
    assert orjson.dumps(built) == orjson.dumps(before)
    assert type(orjson.loads(orjson.dumps(built))["k"]) is str


def test_every_kind_has_a_constructor_checked_above_and_one_letter() -> None:
    assert {b["k"] for _, b in AS_BEFORE} == {k.value for k in Kind}
    assert all(len(k.value) == 1 for k in Kind)


def test_the_protocol_table_takes_every_kind_but_the_stream_layers() -> None:
    table = protocol.handlers()
    assert table.kinds == {k for k in Kind} - {Kind.TICK, Kind.BACKFILL}
    assert identity.OWN.kinds.isdisjoint(privacy.HANDLERS)  # identity alone knows no privacy kind
    assert table[Kind.ERASE_PART] is privacy.HANDLERS[Kind.ERASE_PART]
    assert table["L"] is identity.HANDLERS[Kind.LINK]  # a decoded record's plain letter finds it


def test_a_kind_is_registered_once_and_an_unknown_one_is_the_records_fault() -> None:
    table = Handlers()
    identity.register(table)
    with pytest.raises(ValueError, match="registered twice"):
        identity.register(table)
    with pytest.raises(UnknownKind) as e:
        table["P"]  # privacy's kinds only where privacy registered them
    assert isinstance(e.value, TuskError) and blame(e.value) is Blame.RECORD


def test_identity_does_not_import_privacy() -> None:
    code = "import sys, processors.identity.graph; print('processors.privacy.protocol' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


TWICE: set[str] = set()


def _exception_classes() -> dict[str, tuple[str, list[str]]]:
    """Every class defined in processors/ and stream/: name → (file, base names)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for path in sorted([*REPO.glob("processors/**/*.py"), *REPO.glob("stream/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                         for b in node.bases]
                if node.name in found:
                    TWICE.add(node.name)
                found[node.name] = (str(path.relative_to(REPO)), bases)
    return found


def _raises(bases: list[str]) -> bool:
    def builtin_exception(b: str) -> bool:
        found = getattr(builtins, b, None)
        return isinstance(found, type) and issubclass(found, BaseException)

    return any(builtin_exception(b) or b in ("FaustError", "KafkaError", "KafkaException") for b in bases)


def test_every_tusk_exception_derives_from_one_root() -> None:
    classes = _exception_classes()

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        todo = [name]
        while todo:
            for b in classes.get(todo.pop(), ("", []))[1]:
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    exceptions = {n for n in classes if _raises(sorted(ancestors(n)))}
    assert {"ConfigError", "SettingsError", "DeliveryFailed", "CliError", "StateWriteFailed"} <= exceptions
    assert not TWICE & exceptions, f"exception classes defined twice: {sorted(TWICE & exceptions)}"
    for name in sorted(exceptions - {"TuskError"}):
        assert "TuskError" in ancestors(name), f"{classes[name][0]}: {name} does not derive from TuskError"


def test_the_failure_policy() -> None:
    assert blame(DeliveryFailed("broker down")) is Blame.PLATFORM
    assert blame(StateWriteFailed("rocksdb")) is Blame.PLATFORM
    assert blame(FaustError("x")) is Blame.PLATFORM and blame(KafkaException()) is Blame.PLATFORM
    assert blame(ConfigError("bad file")) is Blame.RECORD
    assert blame(ZeroDivisionError()) is Blame.RECORD  # a bug meeting one record: DLQ it, go on
    assert is_platform_failure(DeliveryFailed("x")) and not is_platform_failure(KeyError("x"))
