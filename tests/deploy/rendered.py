"""The kustomize overlays rendered by ``kubectl kustomize`` (offline), and helpers to walk what they hold."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")
LONG_RUNNING = ("Deployment", "StatefulSet")

Doc = dict[str, Any]


class RenderError(AssertionError):
    pass


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    """``kubectl kustomize deploy/k8s/overlays/OVERLAY``, parsed: every resource the overlay applies."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError(
            "kubectl is not on PATH: tests/deploy render deploy/k8s with `kubectl kustomize` (kustomize 5; install "
            "kubectl 1.27 or newer, e.g. the Kubernetes apt repository's package kubectl)"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize overlays/{overlay} failed:\n{done.stderr}")
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(docs: tuple[Doc, ...], *kinds: str) -> list[Doc]:
    return [d for d in docs if d["kind"] in kinds]


def pod_spec(workload: Doc) -> Doc:
    """The pod template's spec of a Deployment, StatefulSet, Job or CronJob."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: Doc = spec["template"]["spec"]
    return pod


def pod_labels(workload: Doc) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    labels: dict[str, str] = spec["template"]["metadata"].get("labels", {})
    return labels


@dataclass(frozen=True)
class Container:
    workload: Doc
    spec: Doc
    init: bool

    @property
    def where(self) -> str:
        kind = "initContainer" if self.init else "container"
        return f"{self.workload['kind']} {self.workload['metadata']['name']} {kind} {self.spec['name']}"


def containers(docs: tuple[Doc, ...]) -> Iterator[Container]:
    for workload in of_kind(docs, *WORKLOADS):
        pod = pod_spec(workload)
        for spec in pod.get("initContainers", []):
            yield Container(workload, spec, True)
        for spec in pod["containers"]:
            yield Container(workload, spec, False)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions, or a plain map as a Service's) against ``labels``."""
    match_labels = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
