"""deploy/ validated offline: Kubernetes manifests against the API schemas (kubernetes-validate,
strict), the KEDA object against its documented shape, compose.yaml against the compose-spec
schema, the systemd unit with systemd-analyze; plus the cross-references a schema cannot see."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from evstream import KafkaSettings, RegistrySettings
from evstream.consumers import ConsumerSettings
from evstream.consumers.worker import WorkerSettings
from evstream.streams.settings import StreamsSettings

K8S_VERSION = "1.33.0"
ANALYZE = shutil.which("systemd-analyze") or "systemd-analyze"


def documents(repo_root: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((repo_root / "deploy" / "k8s").glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_kubernetes_manifests_match_the_api_schemas(repo_root: Path) -> None:
    docs = [d for d in documents(repo_root) if d["apiVersion"] != "keda.sh/v1alpha1"]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ConfigMap", "Secret", *["Deployment", "Service", "PodDisruptionBudget"] * 2])
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = {**docs[0], "data": {"EVSTREAM_X": 1}, "dta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does reject bad manifests
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


KEDA_SCALED_OBJECT = {  # from https://keda.sh/docs/2.17/reference/scaledobject-spec/ and the kafka scaler
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer"},
                "pollingInterval": {"type": "integer"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "kafka"},
                            "metadata": {
                                "type": "object",
                                "required": ["bootstrapServers", "consumerGroup", "lagThreshold"],
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_keda_scaled_object_targets_the_consumer_worker(repo_root: Path) -> None:
    docs = documents(repo_root)
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    jsonschema.validate(scaled, KEDA_SCALED_OBJECT)
    target = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == scaled["spec"]["scaleTargetRef"]["name"]
    )
    command = target["spec"]["template"]["spec"]["containers"][0]["command"]
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert command[command.index("--group") + 1] == trigger["consumerGroup"]
    assert scaled["spec"]["maxReplicaCount"] <= 6  # the orders topic's partitions (deploy/topics.yaml)


def test_workers_wire_probes_services_and_budgets_to_each_other(repo_root: Path) -> None:
    docs = documents(repo_root)
    known = {
        f"{cls.model_config.get('env_prefix', 'EVSTREAM_')}{name}".upper()
        for cls in (KafkaSettings, RegistrySettings, ConsumerSettings, StreamsSettings, WorkerSettings)
        for name in cls.model_fields
    }
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert set(config["data"]) | set(secret["stringData"]) <= known  # no misspelt setting
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        name, labels = deployment["metadata"]["name"], deployment["spec"]["template"]["metadata"]["labels"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:2] == ["evstream", "worker"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        port = container["ports"][0]
        assert port["containerPort"] == int(config["data"]["EVSTREAM_WORKER_HTTP_PORT"])
        assert config["data"]["EVSTREAM_WORKER_HTTP_HOST"] == "0.0.0.0"
        service = next(
            d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == f"{name}-metrics"
        )
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == port["name"]
        budget = next(d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == name)
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        shutdown = float(config["data"].get("EVSTREAM_CONSUMER_SHUTDOWN_TIMEOUT_S", 30))
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > shutdown


def test_compose_file_matches_the_compose_spec(repo_root: Path) -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    run = [str(checker), "--builtin-schema", "vendor.compose-spec"]
    ok = subprocess.run(
        [*run, str(repo_root / "deploy" / "compose.yaml")], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    compose = yaml.safe_load((repo_root / "deploy" / "compose.yaml").read_text())
    assert {"kafka", "registry", "stream-worker", "orders-view"} <= set(compose["services"])
    assert compose["services"]["kafka"]["image"] == "apache/kafka:4.1.1"  # the version deploy/maven pins
    assert compose["services"]["registry"]["image"] == "apicurio/apicurio-registry:3.3.3"


@pytest.mark.skipif(ANALYZE == "systemd-analyze", reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(repo_root: Path, tmp_path: Path) -> None:
    unit = (repo_root / "deploy" / "systemd" / "evstream-worker@.service").read_text()
    assert "ExecStart=/opt/evstream/venv/bin/evstream worker ${EVSTREAM_WORKER_TARGET}" in unit
    local = tmp_path / "evstream-worker@.service"  # the venv does not exist here: point at /bin/true
    local.write_text(unit.replace("/opt/evstream/venv/bin/evstream", "/bin/true"))
    verified = subprocess.run([ANALYZE, "verify", str(local)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    broken = tmp_path / "broken@.service"
    broken.write_text(local.read_text().replace("ExecStart=", "ExecStrat="))
    refused = subprocess.run([ANALYZE, "verify", str(broken)], capture_output=True, text=True, check=False)
    assert refused.returncode != 0
