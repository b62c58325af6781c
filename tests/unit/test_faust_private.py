"""Faust's private attributes are reached from stream/runtime/faust_adapter.py only.

The known private names are those of the Faust (and mode) classes Tusk uses, read from the
installed faust-streaming, plus the instance attributes their constructors set that Tusk has
needed. A module other than the adapter that reads, writes or patches one of them on anything
but its own object (`self.<name>` assigned, or a method defined, in the same module) fails this test; so does
replacing a method of a Faust object on the instance (`<x>.producer.flush = ...`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import faust
from faust.stores import rocksdb
from faust.tables import manager, recovery
from faust.transport import consumer
from faust.transport.drivers import aiokafka

ROOT = Path(__file__).resolve().parents[2] / "stream"
ADAPTER = "faust_adapter.py"
CLASSES = [faust.App, faust.Table, faust.Stream, faust.Topic, rocksdb.Store, rocksdb.RocksDBOptions,
           consumer.Consumer, consumer.Fetcher, aiokafka.Consumer, aiokafka.Producer,
           recovery.Recovery, manager.TableManager]
INSTANCE = {"_dbs", "_committed_offset", "_read_offset", "_commit_every", "_n_acked", "_stopped",
            "_tusk_hooked", "_tusk_tuned", "_tusk_erasure"}
PRIVATE = INSTANCE | {n for cls in CLASSES for n in dir(cls) if n.startswith("_") and not n.startswith("__")}
PATCHED_METHODS = {"flush", "send", "send_and_wait", "commit", "on_rebalance"}


def reaches(source: str) -> list[str]:
    """What a module's source reaches of Faust's privates: "line: expression" each."""
    tree = ast.parse(source)
    own = {node.attr for node in ast.walk(tree)
           if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
           and isinstance(node.value, ast.Name) and node.value.id == "self"}
    own |= {item.name for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)  # own methods
            for item in cls.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        if node.attr in PRIVATE and not (on_self and node.attr in own):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (node.attr in PATCHED_METHODS and isinstance(node.ctx, ast.Store) and not on_self):
            found.append(f"{node.lineno}: {ast.unparse(node)} = ...")
    for node in ast.walk(tree):  # getattr(x, "_dbs"), setattr(cls, "_del", ...)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_sees_what_it_looks_for() -> None:
    assert {"_db_for_partition", "_dbs", "_committed_offset", "_del", "_drain_messages",
                       "_open_for_partition"} <= PRIVATE
    sample = ("db = table.data._db_for_partition(3)\n"
              "offset = app.consumer._committed_offset.get(tp)\n"
              "dbs = getattr(store, '_dbs', {})\n"
              "app.producer.flush = flush\n"
              "class Mine:\n"
              "    def __init__(self):\n"
              "        self._size = 0\n"
              "    def grow(self):\n"
              "        self._size += 1\n")
    assert sorted(line.split(":")[0] for line in reaches(sample)) == ["1", "2", "3", "4"]


def test_no_module_but_the_adapter_reaches_faust_privates() -> None:
    modules = [p for p in sorted(ROOT.rglob("*.py")) if p.name != ADAPTER]
    assert len(modules) > 20  # the tree is where the test looks
    offenders = {str(p.relative_to(ROOT.parent)): hits for p in modules
                 if (hits := reaches(p.read_text()))}
    assert offenders == {}, f"Faust internals outside stream/{ADAPTER}: {offenders}"
