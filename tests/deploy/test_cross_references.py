"""What the rendered manifests name must exist and agree with the code: Services select pods and their ports,
every ConfigMap, Secret, volume claim and service account a pod refers to exists (or is one the cluster makes,
declared below and in docs/DEPLOY.md), ports are the ones the processes listen on, topics and groups are the
code's, settings are real settings, and every container is sized, probed and confined."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.cli.realtime_cmd import REFRESHER_GROUP
from services.settings import Settings
from services.topics import SEARCH_EVENTS, TOPICS, WORKER_GROUP
from tests.deploy.rendered import (
    LONG_RUNNING,
    OVERLAYS,
    ROOT,
    Container,
    Doc,
    containers,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    render,
    selects,
)

# Secrets no manifest writes, by who makes them: Strimzi (a KafkaUser's password Secret, the cluster CA) or the
# operator before the first apply (docs/DEPLOY.md lists the commands). Never a literal secret in the manifests.
STRIMZI_SECRETS = {"qu-kafka-cluster-ca-cert"}
OPERATOR_SECRETS = {"qu-teacher-llm", "qu-redis-users"}
# OTEL_* variables the OpenTelemetry SDK reads itself (services/telemetry/setup.py), beside the QU_* settings.
OTEL_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME"}
OTEL_VARIABLES |= {"OTEL_RESOURCE_ATTRIBUTES"}
ENGINE_IMAGE = "ghcr.io/qu-engine/qu-engine"


def _settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"QU_{name.upper()}")
        alias = field.validation_alias
        for choice in getattr(alias, "choices", []):
            if isinstance(choice, str) and choice.isupper():
                names.add(choice)
    return names


def _config_map(docs: tuple[Doc, ...], name: str) -> dict[str, str]:
    data: dict[str, str] = named(docs, "ConfigMap", name).get("data", {})
    return data


def _settings_map(docs: tuple[Doc, ...]) -> dict[str, str]:
    (settings,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("qu-settings")]
    data: dict[str, str] = settings["data"]
    return data


def _engine_containers(docs: tuple[Doc, ...]) -> list[Container]:
    return [c for c in containers(docs) if c.spec["image"].startswith(ENGINE_IMAGE)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_is_a_real_setting_and_every_engine_containers_environment_builds_one(overlay: str) -> None:
    docs = render(overlay)
    known = _settings_env_names() | OTEL_VARIABLES
    settings = _settings_map(docs)
    assert set(settings) - known == set(), "names in the qu-settings ConfigMap that services/settings.py lacks"
    for container in _engine_containers(docs):
        env = dict(settings)
        for variable in container.spec.get("env", []):
            name = variable["name"]
            if name.startswith(("QU_", "OTEL_")):
                assert name in known, f"{container.where}: {name} is not a setting"
            # A Secret's value is not in the manifests: any non-empty stand-in proves the name and the type.
            env[name] = variable.get("value", "from-a-secret")
        if "QU_KAFKA_SSL_CA_FILE" in env:
            env.pop("QU_KAFKA_SSL_CA_FILE")  # a file of the pod's (a mounted Secret), checked by path below
        try:
            Settings.model_validate({k.removeprefix("QU_").lower(): v for k, v in env.items() if k.startswith("QU_")})
        except ValidationError as err:
            pytest.fail(f"{container.where}: its environment is not valid settings: {err}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_name_ports_those_pods_expose(overlay: str) -> None:
    docs = render(overlay)
    workloads = of_kind(docs, *LONG_RUNNING)
    for service in of_kind(docs, "Service"):
        pods = [w for w in workloads if selects(service["spec"]["selector"], pod_labels(w))]
        assert pods, f"Service {service['metadata']['name']} selects no pod"
        for workload in pods:
            ports = {
                p["name"]: p["containerPort"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports, f"{service['metadata']['name']}: no port {port['targetPort']}"
                assert ports[port["targetPort"]] == port["port"], f"{service['metadata']['name']}: {port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_a_pod_refers_to_exists(overlay: str) -> None:
    docs = render(overlay)
    config_maps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    claims = {d["metadata"]["name"] for d in of_kind(docs, "PersistentVolumeClaim")}
    accounts = {d["metadata"]["name"] for d in of_kind(docs, "ServiceAccount")}
    kafka_users = {d["metadata"]["name"] for d in of_kind(docs, "KafkaUser")}
    secrets = STRIMZI_SECRETS | OPERATOR_SECRETS | kafka_users
    for workload in of_kind(docs, "Deployment", "StatefulSet", "Job", "CronJob"):
        pod = pod_spec(workload)
        where = f"{workload['kind']} {workload['metadata']['name']}"
        assert pod["serviceAccountName"] in accounts, where
        assert pod.get("automountServiceAccountToken") is False, f"{where}: no pod here talks to the API server"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claim_templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{where}: {volume}"
            if "configMap" in volume:
                data = _config_map(docs, volume["configMap"]["name"])
                assert all(item["key"] in data for item in volume["configMap"].get("items", [])), where
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{where}: secret {volume['secret']['secretName']}"
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claim_templates, f"{where}: mount {mount['name']}"
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, where
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in _config_map(docs, ref["configMapKeyRef"]["name"]), where
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] in secrets, f"{where}: secret {ref['secretKeyRef']['name']}"


def test_the_secrets_an_operator_creates_are_named_in_the_deployment_guide() -> None:
    guide = (ROOT / "docs" / "DEPLOY.md").read_text()
    for secret in sorted(OPERATOR_SECRETS):
        assert f"`{secret}`" in guide, f"docs/DEPLOY.md does not say how to create {secret}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_written_into_the_manifests(overlay: str) -> None:
    docs = render(overlay)
    assert of_kind(docs, "Secret") == []
    secretive = re.compile(r"PASSWORD|API_KEY|TOKEN|SECRET", re.IGNORECASE)
    for container in containers(docs):
        for variable in container.spec.get("env", []):
            if secretive.search(variable["name"]):
                assert "value" not in variable, f"{container.where}: {variable['name']} written as a literal"
    for name, value in _settings_map(docs).items():
        assert not secretive.search(name), f"qu-settings holds {name}={value}: secrets come from Secrets"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_sized_probed_pinned_and_confined(overlay: str) -> None:
    docs = render(overlay)
    for container in containers(docs):
        spec, where = container.spec, container.where
        image = spec["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: image {image} unpinned"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= spec.get("resources", {}).get(kind, {}).keys(), f"{where}: no {kind}"
        confined = spec.get("securityContext", {})
        assert confined.get("allowPrivilegeEscalation") is False, where
        assert confined.get("readOnlyRootFilesystem") is True, where
        assert confined.get("capabilities", {}).get("drop") == ["ALL"], where
        pod = pod_spec(container.workload)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, where
        if container.workload["kind"] in LONG_RUNNING and not container.init:
            assert {"readinessProbe", "livenessProbe"} <= spec.keys(), f"{where}: not probed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_ports_are_the_ones_the_processes_serve(overlay: str) -> None:
    docs = render(overlay)
    settings = _settings_map(docs)
    metrics_port = int(settings["QU_METRICS_PORT"])
    assert settings["QU_METRICS_HOST"] == "0.0.0.0", "a probe or a scrape from outside the pod needs 0.0.0.0"
    for name in ("qu-worker", "qu-refresher"):
        (container,) = pod_spec(named(docs, "Deployment", name))["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": metrics_port}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez"), ("startupProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, f"{name} {probe}"
    (triton,) = pod_spec(named(docs, "Deployment", "qu-triton"))["containers"]
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    expected = {name: int(settings[f"QU_TRITON_{name.upper()}_PORT"]) for name in ("http", "grpc", "metrics")}
    assert ports == expected
    model = settings.get("QU_STUDENT_MODEL", Settings.model_fields["student_model"].default)
    # Ready when the student is, not only the server: a failed reload leaves the server unready, the model serving.
    assert triton["readinessProbe"]["httpGet"] == {"path": f"/v2/models/{model}/ready", "port": "http"}
    assert settings["QU_TRITON_GRPC_URL"] == f"qu-triton:{ports['grpc']}"
    assert settings["QU_TRITON_HTTP_URL"] == f"qu-triton:{ports['http']}"
    if triton["command"] == ["tritonserver"]:  # the GPU image runs the server itself
        for name, port in expected.items():
            assert f"--{name}-port={port}" in triton["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topics_and_partitions_are_the_codes(overlay: str) -> None:
    docs = render(overlay)
    declared = {t["metadata"]["name"]: t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic")}
    assert declared == {spec.name: spec.partitions for spec in TOPICS}


def _faust_app_id() -> str:
    """The first argument of ``faust.App(...)`` in streams/app.py, by its name (importing the app would patch
    aiokafka for the whole test process)."""
    tree = ast.parse((ROOT / "streams" / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "faust.App":
            first = node.args[0]
            if isinstance(first, ast.Name) and first.id == "WORKER_GROUP":
                return WORKER_GROUP
            raise AssertionError(f"faust.App's id is {ast.unparse(first)}, not services.topics.WORKER_GROUP")
    raise AssertionError("no faust.App(...) in streams/app.py")


@pytest.mark.parametrize("overlay", ["prod"])
def test_the_workers_scale_on_their_own_groups_lag_never_past_the_partitions(overlay: str) -> None:
    docs = render(overlay)
    scaled = named(docs, "ScaledObject", "qu-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "qu-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == _faust_app_id() == WORKER_GROUP
    assert trigger["metadata"]["topic"] == SEARCH_EVENTS
    partitions = {spec.name: spec.partitions for spec in TOPICS}[SEARCH_EVENTS]
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions
    assert trigger["metadata"]["bootstrapServers"] == _settings_map(docs)["QU_KAFKA_BOOTSTRAP"]
    triton = named(docs, "ScaledObject", "qu-triton")
    (queue,) = triton["spec"]["triggers"]
    assert "nv_inference_queue_duration_us" in queue["metadata"]["query"]
    assert "nv_inference_compute_infer_duration_us" in queue["metadata"]["query"]
    behavior = triton["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def _acls(user: Doc) -> set[tuple[str, str, str]]:
    return {
        (acl["resource"]["type"], acl["resource"].get("name", ""), operation)
        for acl in user["spec"]["authorization"]["acls"]
        for operation in acl["operations"]
    }


def test_kafka_users_may_do_exactly_what_each_process_does() -> None:
    docs = render("prod")
    topics = {spec.name for spec in TOPICS}
    writes = {
        name: {r for kind, r, op in _acls(named(docs, "KafkaUser", name)) if kind == "topic" and op == "Write"}
        for name in ("qu-worker", "qu-refresher", "qu-teacher", "qu-keda")
    }
    assert writes["qu-worker"] == {"qu.query-annotations.v1", "qu.cache-misses.v1", "qu.dead-letter.v1"}
    assert writes["qu-teacher"] == {"qu.head-tags.v1"}  # only the teacher writes head tags
    assert writes["qu-refresher"] == writes["qu-keda"] == set()
    for user in of_kind(docs, "KafkaUser"):
        for kind, resource, _ in _acls(user):
            if kind == "topic":
                assert resource in topics, f"{user['metadata']['name']}: ACL on unknown topic {resource}"
    assert ("group", WORKER_GROUP, "Read") in _acls(named(docs, "KafkaUser", "qu-worker"))
    assert ("group", REFRESHER_GROUP, "Read") in _acls(named(docs, "KafkaUser", "qu-refresher"))
    # The teacher's log group is the one its CronJob commits with.
    day_log = named(docs, "CronJob", "qu-teacher")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (init,) = day_log["initContainers"]
    argv = shlex.split(init["args"][0])
    group = argv[argv.index("--group") + 1]
    assert ("group", group, "Read") in _acls(named(docs, "KafkaUser", "qu-teacher"))
    # Each client logs in as its own user.
    for name, container in (("qu-worker", "worker"), ("qu-refresher", "refresher")):
        (spec,) = [c for c in pod_spec(named(docs, "Deployment", name))["containers"] if c["name"] == container]
        env = {v["name"]: v for v in spec["env"]}
        assert env["QU_KAFKA_SASL_USERNAME"]["value"] == name
        assert env["QU_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "password"}


def test_only_the_refresher_may_write_redis() -> None:
    docs = render("prod")
    (redis,) = pod_spec(named(docs, "StatefulSet", "qu-redis"))["containers"]
    script = redis["args"][0]
    users = {line.split()[2]: line for line in script.splitlines() if line.strip().startswith('echo "user ')}
    assert set(users) == {"default", "qu-worker", "qu-refresher", "qu-probe"}
    assert " off" in users["default"]
    assert "+@write" not in users["qu-worker"] and "+@read" in users["qu-worker"]
    assert "+@write" in users["qu-refresher"]
    assert "+@write" not in users["qu-probe"] and "+ping" in users["qu-probe"]
    for name in ("qu-worker", "qu-refresher"):
        (spec,) = pod_spec(named(docs, "Deployment", name))["containers"]
        env = {v["name"]: v for v in spec["env"]}
        assert env["QU_REDIS_URL"]["value"].startswith(f"redis://{name}@qu-redis:6379/")


def _policy_allows(docs: tuple[Doc, ...], source: str, target: str, port: int) -> bool:
    """Whether some NetworkPolicy lets pods named ``source`` reach pods named ``target`` on ``port`` (ingress)."""
    workloads = {pod_labels(w).get("app.kubernetes.io/name"): pod_labels(w) for w in of_kind(docs, *LONG_RUNNING)}
    workloads.update({pod_labels(w).get("app.kubernetes.io/name"): pod_labels(w) for w in of_kind(docs, "CronJob")})
    for policy in of_kind(docs, "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], workloads[target]):
            continue
        for rule in policy["spec"].get("ingress", []):
            peers_ok = any(
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and selects(peer["podSelector"], workloads[source])
                for peer in rule.get("from", [])
            )
            if peers_ok and any(p["port"] == port for p in rule.get("ports", [])):
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_only_the_workers_reach_triton_and_only_engine_processes_reach_redis(overlay: str) -> None:
    docs = render(overlay)
    assert _policy_allows(docs, "qu-worker", "qu-triton", 8001)
    for other in ("qu-refresher", "qu-teacher", "qu-otel-collector", "qu-redis"):
        assert not _policy_allows(docs, other, "qu-triton", 8001), other
    assert _policy_allows(docs, "qu-worker", "qu-redis", 6379) and _policy_allows(
        docs, "qu-refresher", "qu-redis", 6379
    )
    for other in ("qu-teacher", "qu-triton", "qu-otel-collector"):
        assert not _policy_allows(docs, other, "qu-redis", 6379), other
    # Default deny covers every engine pod, and only the teacher has egress beyond the cluster.
    deny = named(docs, "NetworkPolicy", "qu-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"]
    external = [
        p
        for p in of_kind(docs, "NetworkPolicy")
        for rule in p["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    assert [p["metadata"]["name"] for p in external] == ["qu-teacher-llm-endpoint"]
    assert external[0]["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "qu-teacher"}}


def test_the_gpu_overlay_asks_for_a_gpu_and_the_dev_overlay_does_not() -> None:
    def gpus(overlay: str) -> list[Any]:
        pod = pod_spec(named(render(overlay), "Deployment", "qu-triton"))
        return [c["resources"]["limits"].get("nvidia.com/gpu") for c in pod["containers"]]

    assert gpus("prod") == ["1"] and gpus("dev") == [None]
    prod = pod_spec(named(render("prod"), "Deployment", "qu-triton"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in prod["tolerations"]
    assert _settings_map(render("prod"))["QU_STUDENT_MODEL"] == "qu_student_trtllm"
    gpu_scripts = ROOT / "deploy" / "gpu"
    (init,) = prod["initContainers"]
    assert Path(init["command"][0]).name in {p.name for p in gpu_scripts.iterdir()}
