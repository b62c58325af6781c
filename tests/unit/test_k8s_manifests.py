"""deploy/k8s: every manifest valid against the Kubernetes schemas, and the pieces fit together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from processors.identity.graph import load_identity_config

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# oldest Kubernetes the manifests target, and the newest the validator knows
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# custom resources: not in the Kubernetes schemas, checked structurally below instead
CRDS = {("keda.sh/v1alpha1", "ScaledObject")}

Doc = dict[str, Any]


def documents() -> list[tuple[str, Doc]]:
    docs: list[tuple[str, Doc]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return docs


DOCS = documents()


def one(kind: str, name: str) -> Doc:
    found = [d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def test_the_expected_resources_are_there() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in DOCS)
    assert kinds == sorted([
        ("ConfigMap", "tusk-env"), ("ConfigMap", "tusk-identity"), ("Secret", "tusk-secrets"),
        ("StatefulSet", "tusk-worker"), ("PodDisruptionBudget", "tusk-worker"),
        ("Service", "tusk-worker-headless"), ("Service", "tusk-api"),
        ("Deployment", "tusk-collector"), ("Service", "tusk-collector"), ("ScaledObject", "tusk-worker"),
    ])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_manifest_matches_kubernetes_schema(where: str, doc: Doc, version: str) -> None:
    if (doc["apiVersion"], doc["kind"]) in CRDS:
        # a CRD kind must fail the Kubernetes schema lookup, never be skipped by accident
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, version, strict=True)
        return
    kubernetes_validate.validate(doc, version, strict=True)


def env_of(container: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_keda_scaled_object_structure() -> None:
    so = one("ScaledObject", "tusk-worker")
    env = one("ConfigMap", "tusk-env")["data"]
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "tusk-worker"}
    assert isinstance(spec["minReplicaCount"], int) and spec["minReplicaCount"] >= 1  # workers serve the API
    # partitions are the ceiling for useful replicas
    assert spec["maxReplicaCount"] == int(env["TUSK_PARTITIONS"]) == 8
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert isinstance(spec["pollingInterval"], int) and isinstance(spec["cooldownPeriod"], int)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    for direction in ("scaleUp", "scaleDown"):
        for policy in behavior[direction]["policies"]:
            assert policy["type"] in ("Pods", "Percent")
            assert policy["value"] > 0 and policy["periodSeconds"] > 0
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values())  # KEDA metadata is a map of strings
    assert meta["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == env["TUSK_APP_ID"]  # Faust's consumer group is the app id
    assert meta["topic"] == env["TUSK_TOPIC_PREFIX"] + "touchpoints"
    assert int(meta["lagThreshold"]) > 0
    assert meta["allowIdleConsumers"] == "false"
    assert set(meta) <= {"bootstrapServers", "consumerGroup", "topic", "lagThreshold",
                         "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers",
                         "scaleToZeroOnInvalidOffset", "excludePersistentLag", "limitToPartitionsWithLag",
                         "version", "partitionLimitation"}


def test_worker_statefulset_fits_its_services_and_config() -> None:
    sts = one("StatefulSet", "tusk-worker")
    headless = one("Service", "tusk-worker-headless")
    api = one("Service", "tusk-api")
    pod = sts["spec"]["template"]
    [c] = pod["spec"]["containers"]
    env = env_of(c)
    assert c["args"] == ["worker"]
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    labels = pod["metadata"]["labels"]
    for svc in (headless, api):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert all(p["targetPort"] == "http" for p in svc["spec"]["ports"])
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(env["TUSK_WEB_PORT"]) == 6066
    assert env["TUSK_WEB_HOST"] == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # the advertised host is the pod's stable DNS name; its parts are defined before it is used
    names = [e["name"] for e in c["env"]]
    assert env["TUSK_WEB_ADVERTISED_HOST"] == "$(POD_NAME).tusk-worker-headless.$(POD_NAMESPACE).svc"
    assert names.index("POD_NAME") < names.index("TUSK_WEB_ADVERTISED_HOST")
    assert names.index("POD_NAMESPACE") < names.index("TUSK_WEB_ADVERTISED_HOST")
    # RocksDB lives on the claim of each pod
    [claim] = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env["TUSK_DATADIR"].startswith(mounts[claim["metadata"]["name"]] + "/")
    # settings and secrets come from the ConfigMap and the Secret
    refs = {(k, v["name"]) for e in c["envFrom"] for k, v in e.items()}
    assert refs == {("configMapRef", "tusk-env"), ("secretRef", "tusk-secrets")}
    identity_path = one("ConfigMap", "tusk-env")["data"]["TUSK_IDENTITY_CONFIG"]
    [vol] = [v for v in pod["spec"]["volumes"] if v["name"] != claim["metadata"]["name"]]
    assert vol["configMap"]["name"] == "tusk-identity"
    assert identity_path == mounts[vol["name"]] + "/identity.yaml"


def test_collector_deployment_and_service() -> None:
    dep = one("Deployment", "tusk-collector")
    svc = one("Service", "tusk-collector")
    [c] = dep["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert c["args"] == ["collector"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": int(env["TUSK_COLLECTOR_PORT"])}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert "TUSK_COLLECTOR_WRITE_KEYS" in one("Secret", "tusk-secrets")["stringData"]


def test_identity_config_in_the_configmap_loads(tmp_path: Path) -> None:
    env = one("ConfigMap", "tusk-env")["data"]
    text = one("ConfigMap", "tusk-identity")["data"]["identity.yaml"]
    path = tmp_path / "identity.yaml"
    path.write_text(text)
    cfg = load_identity_config(path, int(env["TUSK_PARTITIONS"]))
    example = load_identity_config(K8S.parent / "examples" / "identity.yaml", int(env["TUSK_PARTITIONS"]))
    assert cfg.limits == example.limits  # the same rules as the documented example


def test_every_tusk_setting_in_the_configmap_is_known() -> None:
    settings_src = (K8S.parents[1] / "stream" / "runtime" / "settings.py").read_text()
    for name in one("ConfigMap", "tusk-env")["data"]:
        assert name == "KAFKA_BOOTSTRAP_SERVERS" or f'"{name}"' in settings_src, name
