"""`tusk demo`: a local Kafka (unless one is given), a worker, a synthetic shop, a report.

Leaves nothing running: the worker and the broker it started are stopped, and
their folders removed, whatever happens.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from processors.segments.definitions import load_file
from stream.cli.base import CliError, http_get
from stream.demo.synthetic import people, shop_stream
from stream.ingest.produce import produce_lines
from stream.kafka.clients import ensure_topics, read_topic
from stream.runtime import variables
from stream.runtime.definitions import produce_definition
from stream.runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
console = Console()


def load_launcher() -> ModuleType:
    path = REPO / "deploy" / "kafka" / "local_kafka.py"
    spec = importlib.util.spec_from_file_location("tusk_local_kafka", path)
    if spec is None or spec.loader is None:
        raise CliError(f"the local Kafka launcher is missing at {path}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A free TCP port on the loopback (the launcher's, deploy/kafka/local_kafka.py)."""
    return int(load_launcher().free_port())


@contextlib.contextmanager
def kafka(workdir: Path, bootstrap: str | None = None) -> Iterator[str]:
    given = bootstrap or variables.given("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    launcher = load_launcher()
    with console.status("starting a local Kafka (KRaft, loopback)…"):
        try:
            broker = launcher.start(port=free_port(), workdir=workdir / "kafka")
        except launcher.LauncherError as e:
            raise CliError(str(e)) from e
    console.print(f"[green]✓[/] Kafka {broker.bootstrap}")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli.commands", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def metrics(url: str) -> dict[str, float]:
    """Flattened samples of a worker's /metrics: 'name{label=value}' → value."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise CliError("the worker exited during start-up: " + " | ".join(tail))
        with contextlib.suppress(CliError):
            status, _ = http_get(f"{url}/health", timeout=2)
            if status == 200:
                return
        time.sleep(0.5)
    raise CliError(f"the worker did not become healthy within {timeout:.0f}s (log: {log}).")


def group_split(healths: list[tuple[int, Any]], partitions: int) -> tuple[tuple[int, ...], ...] | None:
    """The partitions each worker serves, from their /health answers (status, body), once the
    group has settled: every worker recovered (200), each partition served by exactly one, and
    every worker serving some when there are enough partitions (a worker that joined last has
    its share); None until then."""
    owned = []
    for status, body in healths:
        if status != 200:
            return None
        owned.append(tuple(body.get("partitions", [])))
    if sorted(p for ps in owned for p in ps) != list(range(partitions)):
        return None
    return tuple(owned) if partitions < len(owned) or all(owned) else None


def wait_processed(url: str, expected: int, timeout: float = 90) -> dict[str, float]:
    """Until every produced record is accounted for: applied/duplicate or rejected."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = metrics(url)
        rejected = sum(v for k, v in seen.items() if k.startswith("tusk_events_rejected_total"))
        processed = sum(v for k, v in seen.items() if k.startswith("tusk_events_processed_total"))
        if seen.get("tusk_events_in_total", 0) >= expected and rejected + processed >= expected:
            return seen
        time.sleep(0.5)
    raise CliError(f"only {seen.get('tusk_events_in_total', 0):.0f} of {expected} events were "
                   f"processed within {timeout:.0f}s.")


def identity_records(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("tusk_identity_messages_total"))


def wait_quiet(read: Callable[[], dict[str, float]], settle: float = 2.0,
               timeout: float = 120.0) -> dict[str, float]:
    """Until no identity record (link, merge, ...) has been handled for `settle` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    samples: dict[str, float] = {}
    while time.monotonic() < deadline:
        samples = read()
        total = identity_records(samples)
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= settle:
            return samples
        time.sleep(0.5)
    raise CliError(f"identity records were still flowing after {timeout:.0f}s.")


def report(url: str, produced: dict[str, Any], seen: dict[str, float], examples: list[str],
           elapsed: float) -> None:
    t = Table(title="Tusk demo: what the worker did", show_header=False)
    t.add_row("records produced", f"{produced['delivered']}")
    t.add_row("events in", f"{seen.get('tusk_events_in_total', 0):.0f}")
    t.add_row("applied to profiles", f"{seen.get('tusk_events_processed_total{outcome=applied}', 0):.0f}")
    t.add_row("duplicates dropped", f"{seen.get('tusk_events_processed_total{outcome=duplicate}', 0):.0f}")
    created = seen.get("tusk_profiles_created_total", 0)
    merges = seen.get("tusk_merges_total", 0)
    t.add_row("profiles (people)", f"{created - merges:.0f}  ({created:.0f} minted, {merges:.0f} merged)")
    for k, v in sorted(seen.items()):
        if k.startswith("tusk_events_rejected_total{"):
            t.add_row(f"  rejected: {k.split('reason=')[1].rstrip('}')}", f"{v:.0f} → DLQ")
    t.add_row("wall time", f"{elapsed:.1f}s")
    console.print(t)
    for ident in examples:
        kind, value = ident.split(":", 1)
        status, body = http_get(f"{url}/profiles/{kind}/{urllib.parse.quote(value, safe='')}")
        if status != 200:
            continue
        console.rule(f"profile {body['id']}  ({ident})")
        summary = {k: body[k] for k in ("identities", "traits", "first_seen", "last_seen",
                                        "event_count", "event_counts", "merged_from")}
        if body.get("predictions"):
            summary["predictions"] = body["predictions"]
        summary["recent_events"] = [
            f"{e['ts']} {e['type']} {e.get('event') or e.get('name') or ''}".rstrip()
            for e in body["recent_events"][:4]]
        console.print_json(data=summary)


EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "shop.yaml"


def report_activation(url: str, settings: Settings) -> None:
    _, listing = http_get(f"{url}/segments")
    t = Table(title="segments (live sizes)", show_header=True)
    t.add_column("segment")
    t.add_column("members", justify="right")
    t.add_column("destinations")
    for seg in listing["segments"]:
        dests = ", ".join(d["channel"] for d in seg.get("destinations", []))
        t.add_row(seg["id"], str(seg["size"]), dests)
    console.print(t)
    seen = metrics(url)
    t = Table(title="activation triggers", show_header=True)
    t.add_column("channel")
    t.add_column("sent", justify="right")
    t.add_column("suppressed (reason)")
    channels = sorted({k.split("channel=")[1].split(",")[0].rstrip("}") for k in seen
                       if k.startswith(("tusk_triggers_total{", "tusk_triggers_suppressed_total{"))})
    for ch in channels:
        sent = seen.get(f"tusk_triggers_total{{channel={ch}}}", 0)
        why = ", ".join(f"{k.split('reason=')[1].rstrip('}')}: {v:.0f}" for k, v in sorted(seen.items())
                        if k.startswith(f"tusk_triggers_suppressed_total{{channel={ch},"))
        t.add_row(ch, f"{sent:.0f}", why)
    console.print(t)
    for ch in channels[:2]:
        records = list(read_topic(settings, settings.topics.activations(ch), timeout=10))
        if records:
            console.rule(f"a trigger on {settings.topics.activations(ch)}")
            console.print_json(data=orjson.loads(records[0].value()))


PREDICTIONS = EXAMPLES.parent / "predictions.yaml"


def predictions(url: str, settings: Settings) -> None:
    """Fit the purchase models on the demo's customers, publish them, apply the example
    segments on p_alive / expected orders / CLV and wait for their backfill."""
    from stream.cli.predict import fit_cluster, publish

    try:
        with console.status("fitting BG/NBD and Gamma-Gamma on every customer…"):
            fitted = fit_cluster(url, None, "week", timeout=60)
    except CliError as e:
        console.print(f"[yellow]![/] no predictions: {e}")
        return
    publish(settings, fitted)
    bg, gg = fitted["bg_nbd"], fitted["gamma_gamma"] or {}
    console.print(f"[green]✓[/] fitted on {fitted['customers']} customers (weeks): "
                  + ", ".join(f"{k}={v:.3g}" for k, v in {**bg, **gg}.items() if isinstance(v, float)))
    traits, segments = load_file(PREDICTIONS)
    for kind, items in (("computed_trait", traits), ("segment", segments)):
        for spec in items:
            produce_definition(settings, kind, spec["id"], spec)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(CliError):
            status, body = http_get(f"{url}/segments/{segments[-1]['id']}/size", timeout=3)
            if status == 200 and body.get("complete"):
                break
        time.sleep(0.5)
    console.print(f"[green]✓[/] applied {', '.join(s['id'] for s in segments)} "
                  f"from {PREDICTIONS.relative_to(PREDICTIONS.parents[2])}")


JOURNEYS = EXAMPLES.parent / "journeys.yaml"


def apply_journeys(settings: Settings) -> None:
    from processors.segments.definitions import load_journeys

    traits, segments = load_file(JOURNEYS)
    journeys = load_journeys(JOURNEYS, base=None)
    for kind, items in (("computed_trait", traits), ("segment", segments), ("journey", journeys)):
        for spec in items:
            produce_definition(settings, kind, spec["id"], spec)
    console.print(f"[green]✓[/] applied the journeys {', '.join(j['id'] for j in journeys)} "
                  f"from {JOURNEYS.relative_to(JOURNEYS.parents[2])}")


def report_journeys(url: str) -> None:
    """Each journey as a funnel of its steps, with live counts (GET /journeys)."""
    _, listing = http_get(f"{url}/journeys")
    for j in listing["journeys"]:
        t = Table(title=f"journey {j['id']}: {j['active']} in it now", show_header=True)
        for col in ("step", "kind", "entered", "waiting", "converted", "exited", "completed"):
            t.add_column(col, justify="left" if col in ("step", "kind") else "right")
        for s in j["steps_live"]:
            t.add_row(s["step"], s["kind"] or "", *(str(s[k]) for k in ("entered", "waiting", "converted",
                                                                         "exited", "completed")))
        console.print(t)


def run_demo(profiles: int = 400, seed: int = 7, bootstrap: str | None = None) -> int:
    """`bootstrap`: a Kafka to use (`tusk demo --bootstrap`); default KAFKA_BOOTSTRAP_SERVERS, else a
    local one started for the demo."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tusk-demo-"))
    run_id = f"demo{int(time.time())}"
    try:
        with kafka(workdir, bootstrap) as bootstrap:
            port = free_port()
            # event-time clock: the synthetic history is judged at its own last instant
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TUSK_TOPIC_PREFIX": f"{run_id}.",
                   "TUSK_APP_ID": run_id, "TUSK_DATADIR": str(workdir / "worker"),
                   "TUSK_WEB_PORT": str(port), "TUSK_PARTITIONS": "4", "TUSK_CLOCK": "event",
                   "TUSK_TICK_INTERVAL": "500ms"}
            settings = Settings.from_env(env)
            ensure_topics(settings)
            traits, segments = load_file(EXAMPLES)
            for kind, items in (("computed_trait", traits), ("segment", segments)):
                for spec in items:
                    produce_definition(settings, kind, spec["id"], spec)
            console.print(f"[green]✓[/] applied {len(traits)} computed traits and {len(segments)} segments "
                          f"from {EXAMPLES.relative_to(EXAMPLES.parents[2])}")
            apply_journeys(settings)
            url = f"http://127.0.0.1:{port}"
            log = workdir / "worker.log"
            with worker(env, log) as proc:
                with console.status("starting a worker…"):
                    wait_healthy(url, proc, log)
                console.print(f"[green]✓[/] worker at {url}")
                lines = list(shop_stream(profiles, seed=seed))
                produced = produce_lines(settings, lines, settings.topics.touchpoints, progress=True)
                console.print(f"[green]✓[/] produced {produced['delivered']} records")
                with console.status("waiting for the worker to process them…"):
                    wait_processed(url, produced["delivered"])
                    seen = wait_quiet(lambda: metrics(url))
                predictions(url, settings)
                crowd = people(profiles, seed)
                joined = [p for p in crowd if p.signs_up and len(p.devices) > 1]
                best = sorted(joined, key=lambda p: (-p.orders, p.n))
                # the same people found by an identifier they never logged in with
                examples = [f"email:{best[0].email}", f"anonymous_id:{best[1].devices[0][0]}"]
                examples += [f"device_id:{p.devices[0][1]}" for p in crowd if not p.signs_up][:1]
                time.sleep(2)  # a few ticks: time-relative segments settle at the history's end
                report(url, produced, seen, examples, time.monotonic() - started)
                report_activation(url, settings)
                report_journeys(url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
