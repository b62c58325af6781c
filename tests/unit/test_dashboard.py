"""deploy/grafana/tusk-dashboard.json: well-formed Grafana JSON that only queries metrics Tusk exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import stream.ingest.collector  # noqa: F401 - registers the collector's metrics
import stream.runtime.metrics  # noqa: F401 - registers the worker's metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD: dict[str, Any] = json.loads((DEPLOY / "grafana" / "tusk-dashboard.json").read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
EXPRS = [t["expr"] for p in PANELS for t in p["targets"]]

# PromQL words that are not metric names (functions are recognised by the "(" after them)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
            "summary": ("", "_count", "_sum")}


def exported_series() -> dict[str, str]:
    """Every series name Tusk's processes can export → its metric type (from the live registry)."""
    names: dict[str, str] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("tusk_"):
            continue
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.type
    return names


def metric_names(expr: str) -> set[str]:
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)           # string literals
    stripped = re.sub(r"\{[^}]*\}", "", stripped)                 # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)                # range selectors ($__rate_interval)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    words = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", stripped)
    return {w for w in words if w.lower() not in KEYWORDS}


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y"}[5m])))') == {"a_bucket"}
    assert metric_names("sum(rate(a_sum[$__rate_interval])) / sum(rate(a_count[1m]))") == {"a_sum", "a_count"}
    assert metric_names("sum without (pod) (b) > bool 1 and on (job) c") == {"b", "c"}


def test_registry_holds_worker_and_collector_metrics() -> None:
    series = exported_series()
    assert series["tusk_events_in_total"] == "counter"
    assert series["tusk_processing_seconds_bucket"] == "histogram"
    assert series["tusk_profiles_stored"] == "gauge"
    assert series["tusk_collector_requests_total"] == "counter"


def test_grafana_structure() -> None:
    assert isinstance(DASHBOARD["uid"], str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", DASHBOARD["uid"])
    assert DASHBOARD["title"] and DASHBOARD["id"] is None  # importable into any Grafana
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    assert len(PANELS) >= 7
    for p in PANELS:
        assert p["type"] in {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap"}, p["title"]
        assert p["title"]
        grid = p["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


@pytest.mark.parametrize("words", [
    ("ingest",), ("reject", "reason"), ("lag",), ("latency",), ("merge",), ("profiles created",),
    ("collector", "requests"),
])
def test_required_panels_exist(words: tuple[str, ...]) -> None:
    assert any(all(w in p["title"].lower() for w in words) for p in PANELS), words


@pytest.mark.parametrize("expr", EXPRS)
def test_every_queried_metric_exists(expr: str) -> None:
    series = exported_series()
    names = metric_names(expr)
    assert names, expr
    unknown = names - series.keys()
    assert not unknown, f"{expr}: {sorted(unknown)} are not exported (known: {sorted(series)})"
    # rate() only makes sense over counters and histogram series
    for name in re.findall(r"\b(?:rate|irate|increase)\(\s*([A-Za-z_:][\w:]*)", expr):
        assert series[name] in ("counter", "histogram"), f"{expr}: rate over {series[name]} {name}"
    for name in re.findall(r"histogram_quantile\([^,]+,.*?\(\s*rate\(\s*([\w:]+)", expr):
        assert name.endswith("_bucket") and "by (le" in expr.replace("by(", "by ("), expr


def test_prometheus_scrapes_workers_and_collector() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"tusk-worker", "tusk-collector"}
    k8s_apps = {"tusk-worker", "tusk-collector"}
    for name, job in jobs.items():
        keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"
                and r["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]]
        assert [r["regex"] for r in keep] == [name] and name in k8s_apps
    # the pods carry the annotations the jobs rely on
    for manifest, port in (("worker-statefulset.yaml", "6066"), ("collector.yaml", "8088")):
        workload = next(yaml.safe_load_all((DEPLOY / "k8s" / manifest).read_text()))
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": port,
                               "prometheus.io/path": "/metrics"}
