"""The app is built, not imported: importing any module of `stream` builds no Faust app, no
pipeline and no Kafka client; `build_app` (stream/runtime/app.py) and the worker's wiring
(stream/runtime/worker.py: `build_worker`) give independent apps for different settings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import orjson

from stream.runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# In a fresh interpreter (modules already imported by other tests would not run again): guard the
# constructors, then import every module under stream/ and report what was constructed.
WALK = r"""
import importlib, pkgutil, sys, traceback
import orjson, faust, confluent_kafka
import confluent_kafka.admin

built = []

def guard(name, cls):
    class Guarded(cls):
        def __init__(self, *a, **kw):
            built.append((name, "".join(traceback.format_stack(limit=12))))
            super().__init__(*a, **kw)
    Guarded.__name__ = Guarded.__qualname__ = cls.__name__
    return Guarded

init = faust.App.__init__
def app_init(self, *a, **kw):
    built.append(("faust.App", "".join(traceback.format_stack(limit=12))))
    init(self, *a, **kw)
faust.App.__init__ = app_init
for name in ("Producer", "Consumer"):
    setattr(confluent_kafka, name, guard(f"confluent_kafka.{name}", getattr(confluent_kafka, name)))
confluent_kafka.admin.AdminClient = confluent_kafka.AdminClient = guard(
    "confluent_kafka.AdminClient", confluent_kafka.admin.AdminClient)
import stream.runtime.pipeline as pipeline_module
pipe_init = pipeline_module.Pipeline.__init__
def pipeline_init(self, *a, **kw):
    built.append(("Pipeline", "".join(traceback.format_stack(limit=12))))
    pipe_init(self, *a, **kw)
pipeline_module.Pipeline.__init__ = pipeline_init

import stream
names, failed = [], {}
for info in pkgutil.walk_packages(stream.__path__, "stream."):
    try:
        importlib.import_module(info.name)
        names.append(info.name)
    except BaseException as e:
        failed[info.name] = repr(e)
print(orjson.dumps({"modules": names, "failed": failed, "built": built}).decode())
"""


def test_importing_every_module_of_stream_builds_no_app_pipeline_or_client() -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TUSK_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "BENCH_PROGRESS")}
    out = subprocess.run([sys.executable, "-c", WALK], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = orjson.loads(out.stdout.splitlines()[-1])
    assert report["failed"] == {}, report["failed"]
    # the walk saw the modules that used to build at import
    assert {"stream.runtime.app", "stream.runtime.agents", "stream.runtime.worker", "stream.api.web",
            "stream.api.console", "stream.api.auth", "stream.privacy.erasure", "stream.bench.apps",
            "stream.kafka.outbox"} <= set(report["modules"])
    assert report["built"] == [], "\n\n".join(f"{name} built at import:\n{stack}"
                                              for name, stack in report["built"])


def test_the_guard_sees_an_app_built_at_import(tmp_path: Path) -> None:
    """The walk's guard is not blind: a module building a faust.App at import is reported."""
    pkg = tmp_path / "stream"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "eager.py").write_text("import faust\napp = faust.App('eager', autodiscover=False)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUSK_")}
    env["PYTHONPATH"] = str(tmp_path)
    code = WALK.replace("import stream.runtime.pipeline as pipeline_module", "import types; "
                        "pipeline_module = types.SimpleNamespace(Pipeline=type('P', (), {}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = orjson.loads(out.stdout.splitlines()[-1])
    assert report["modules"] == ["stream.eager"]
    assert [name for name, _ in report["built"]] == ["faust.App"]


def test_two_settings_build_two_independent_workers(tmp_path: Path) -> None:
    from stream.api.context import served
    from stream.runtime.worker import build_worker

    one = dataclasses.replace(Settings(), app_id="tusk-one", topic_prefix="one.", web_port=16061,
                              partitions=2, datadir=tmp_path / "one")
    two = dataclasses.replace(Settings(), app_id="tusk-two", topic_prefix="two.", web_port=16062,
                              partitions=5, datadir=tmp_path / "two")
    (built1, pipe1), (built2, pipe2) = build_worker(one), build_worker(two)
    app1, app2 = built1.app, built2.app
    assert app1 is not app2
    assert (app1.conf.id, app2.conf.id) == ("tusk-one", "tusk-two")
    assert (app1.conf.web_port, app2.conf.web_port) == (16061, 16062)
    assert (built1.touchpoints.get_topic_name(), built2.touchpoints.get_topic_name()) == (
        "one.touchpoints", "two.touchpoints")
    assert built1.profiles is not built2.profiles and built1.profiles.app is app1
    assert (pipe1.n, pipe2.n) == (2, 5) and pipe1.state is not pipe2.state
    # each app's tables write through its own write-back layer and outbox (no producer yet)
    from stream.kafka.outbox import outbox_of

    assert built1.outbox is not built2.outbox and built1.writeback is not built2.writeback
    assert outbox_of(app1) is built1.outbox and outbox_of(app2) is built2.outbox
    assert built1.writeback.sink is built1.outbox and built1.outbox.state is built1.writeback
    assert pipe1.outbox is built1.outbox and pipe2.outbox is built2.outbox
    assert built1.outbox._producer is None and built2.outbox._producer is None
    assert pipe1.reader is not pipe2.reader and pipe1.reader.topic != pipe2.reader.topic
    # each app's views serve its own pipeline; the same routes on both
    assert served(app1).pipeline is pipe1 and served(app2).pipeline is pipe2
    assert served(app1).settings is one and served(app2).settings is two
    assert sorted(app1.web.views) == sorted(app2.web.views)
    assert {"/health", "/profiles/{kind}/{value}", "/console", "/journeys", "/identity/quarantine",
            "/predict/model", "/profiles/id/{profile_id}/explain"} <= set(app1.web.views)
    view1, view2 = app1.web.views["/segments"], app2.web.views["/segments"]
    assert served(view1).pipeline is pipe1 and served(view2).pipeline is pipe2
    tail1, tail2 = served(app1).parts["stream.api.console"], served(app2).parts["stream.api.console"]
    assert tail1 is not tail2 and tail1.settings is one and tail2.settings is two
    assert sorted(app1.agents) == sorted(app2.agents) and len(app1.agents) == 3
    assert app1.agents["stream.runtime.agents.ingest"] is not app2.agents["stream.runtime.agents.ingest"]
