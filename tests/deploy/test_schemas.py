"""Every overlay renders, and what it renders is valid: built-in kinds against the Kubernetes API schemas of a
stated version (strictly: an unknown field is an error), KEDA's resources against its published models, and
Strimzi's and the Prometheus Operator's (no model package exists for them) by the fields they require."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from pydantic import BaseModel

from tests.deploy.rendered import OVERLAYS, Doc, of_kind, pod_labels, render, selects

# The oldest Kubernetes the manifests promise to run on (CronJob timeZone is GA from 1.27; 1.31 is current).
KUBERNETES_VERSION = "1.31.0"
CUSTOM_KINDS = {
    "kafka.strimzi.io/v1beta2": {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"},
    "keda.sh/v1alpha1": {"ScaledObject", "TriggerAuthentication"},
    "monitoring.coreos.com/v1": {"PodMonitor"},
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_renders_and_holds_only_kinds_these_tests_validate(overlay: str) -> None:
    docs = render(overlay)
    assert docs, f"overlays/{overlay} rendered nothing"
    for doc in docs:
        api = doc["apiVersion"]
        if api in CUSTOM_KINDS:
            assert doc["kind"] in CUSTOM_KINDS[api], f"{doc['kind']} of {api}: no validation below covers it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_kinds_are_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    problems = []
    for doc in render(overlay):
        if doc["apiVersion"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: {err.message} at {list(err.path)}")
    assert problems == []


def _unknown_fields(original: Any, kept: Any, path: str = "") -> list[str]:
    """Keys of ``original`` that a model dropped (pydantic ignores unknown fields: this finds them)."""
    if isinstance(original, dict) and isinstance(kept, dict):
        out = []
        for key, value in original.items():
            if key not in kept:
                out.append(f"{path}.{key}")
            else:
                out += _unknown_fields(value, kept[key], f"{path}.{key}")
        return out
    if isinstance(original, list) and isinstance(kept, list):
        return [
            p
            for i, (a, b) in enumerate(zip(original, kept, strict=False))
            for p in _unknown_fields(a, b, f"{path}[{i}]")
        ]
    return []


def _check_model(model: type[BaseModel], doc: Doc) -> list[str]:
    parsed = model.model_validate(doc)
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{doc['kind']} {doc['metadata']['name']}: unknown field {p}" for p in _unknown_fields(doc, dumped)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_resources_are_valid_against_kedas_models_with_no_unknown_field(overlay: str) -> None:
    docs = render(overlay)
    problems = []
    for doc in of_kind(docs, "ScaledObject"):
        problems += _check_model(ScaledObject, doc)
    for doc in of_kind(docs, "TriggerAuthentication"):
        problems += _check_model(TriggerAuthentication, doc)
    assert problems == []


def test_the_unknown_field_check_finds_a_misspelt_field() -> None:
    doc = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 3, "triggers": [{"type": "kafka", "metadata": {}}]},
    }
    assert _check_model(ScaledObject, doc) == ["ScaledObject x: unknown field .spec.maxReplicas"]


# --- Strimzi (kafka.strimzi.io/v1beta2): the fields its CRDs require, and the values they allow ---
ACL_OPERATIONS = {"Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs"}
ACL_OPERATIONS |= {"DescribeConfigs", "IdempotentWrite", "All"}
ACL_RESOURCES = {"topic", "group", "cluster", "transactionalId"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_resources_have_what_their_crds_require(overlay: str) -> None:
    docs = render(overlay)
    (kafka,) = of_kind(docs, "Kafka")
    cluster = kafka["metadata"]["name"]
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners, "a Kafka needs at least one listener"
    for listener in listeners:
        assert {"name", "port", "type", "tls"} <= listener.keys(), listener
        assert listener["type"] in {"internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"}
    pools = of_kind(docs, "KafkaNodePool")
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}, "KRaft needs controllers and brokers"
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert pool["spec"]["replicas"] >= 1 and pool["spec"]["storage"]["type"] in {"jbod", "persistent-claim"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    for topic in of_kind(docs, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert 1 <= topic["spec"]["replicas"] <= brokers, f"{topic['metadata']['name']}: more replicas than brokers"
        insync = int(topic["spec"]["config"].get("min.insync.replicas", 1))
        assert insync <= topic["spec"]["replicas"], f"{topic['metadata']['name']}: min.insync.replicas > replicas"
        assert "retention.ms" in topic["spec"]["config"], f"{topic['metadata']['name']}: retention left to a default"
    authentications = {listener.get("authentication", {}).get("type") for listener in listeners}
    for user in of_kind(docs, "KafkaUser"):
        name = user["metadata"]["name"]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert user["spec"]["authentication"]["type"] in authentications, f"{name}: no listener takes its auth"
        assert kafka["spec"]["kafka"]["authorization"]["type"] == user["spec"]["authorization"]["type"] == "simple"
        assert kafka["spec"]["entityOperator"].get("userOperator") is not None, "KafkaUsers need the User Operator"
        for acl in user["spec"]["authorization"]["acls"]:
            assert acl["resource"]["type"] in ACL_RESOURCES, f"{name}: {acl}"
            assert set(acl["operations"]) <= ACL_OPERATIONS, f"{name}: {acl}"
            if acl["resource"]["type"] != "cluster":
                assert acl["resource"]["name"] and acl["resource"]["patternType"] in {"literal", "prefix"}


@pytest.mark.parametrize("overlay", ["prod"])
def test_pod_monitors_select_pods_that_expose_the_named_port(overlay: str) -> None:
    docs = render(overlay)
    monitors = of_kind(docs, "PodMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"qu-engine", "qu-triton"}
    for monitor in monitors:
        pods = [
            w for w in of_kind(docs, "Deployment", "StatefulSet") if selects(monitor["spec"]["selector"], pod_labels(w))
        ]
        assert pods, f"PodMonitor {monitor['metadata']['name']} selects no pod"
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            for workload in pods:
                ports = {
                    p.get("name")
                    for c in workload["spec"]["template"]["spec"]["containers"]
                    for p in c.get("ports", [])
                }
                assert endpoint["port"] in ports, f"{workload['metadata']['name']} has no port {endpoint['port']}"
