"""The Helm chart and the Dockerfile, checked offline (no cluster and no Docker engine here):
`helm lint`, `helm template` with bundled and with external components, every rendered object
validated against the Kubernetes schemas (`kubernetes-validate --strict`), and hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

CHART = REPO / "deploy" / "helm" / "dsotp"
BIN = Path(sys.executable).parent


def helm() -> str:
    found = REPO / ".tools" / "helm"
    if found.exists():
        return str(found)
    on_path = shutil.which("helm")
    assert on_path, "helm is not installed: run scripts/test.sh (scripts/setup.sh --services)"
    return on_path


def render(*values: str, extra: tuple[str, ...] = ()) -> tuple[str, list[dict[str, Any]]]:
    args = [helm(), "template", "rel", str(CHART)]
    for name in values:
        args += ["-f", str(CHART / name)]
    result = subprocess.run(
        [*args, *extra], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return result.stdout, docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def validate(text: str, tmp_path: Path) -> str:
    path = tmp_path / "rendered.yaml"
    path.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_helm_lint_passes() -> None:
    result = subprocess.run(
        [helm(), "lint", str(CHART), "-f", str(CHART / "ci-values.yaml"), "--strict"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_install_renders_every_component_and_validates(tmp_path: Path) -> None:
    text, docs = render("ci-values.yaml")
    report = validate(text, tmp_path)
    # only the Strimzi custom resources have no schema offline
    unvalidated = {
        line.split("kind ")[1].split()[0] for line in report.splitlines() if "WARN" in line
    }
    assert unvalidated <= {"Kafka", "KafkaNodePool"}, report
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"rel-dsotp-{n}" for n in ("bridge", "worker", "api", "grafana")}
    assert set(by_kind(docs, "StatefulSet")) == {"rel-dsotp-rabbitmq", "rel-dsotp-influxdb"}
    assert {"Kafka", "KafkaNodePool"} <= {d["kind"] for d in docs}
    kafka = next(d for d in docs if d["kind"] == "Kafka")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    # the databus: MQTT on NodePort 31883, anonymous access off, credentials from the Secret
    service = by_kind(docs, "Service")["rel-dsotp-rabbitmq"]
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == 31883
    rabbit_conf = by_kind(docs, "ConfigMap")["rel-dsotp-rabbitmq"]["data"]
    assert "mqtt.allow_anonymous = false" in rabbit_conf["rabbitmq.conf"]
    assert "rabbitmq_mqtt" in rabbit_conf["enabled_plugins"]
    # workers: replicas from values; every dsotp container with resources and both probes
    assert deployments["rel-dsotp-worker"]["spec"]["replicas"] == 2
    for name in ("bridge", "worker", "api"):
        pod = deployments[f"rel-dsotp-{name}"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = pod["containers"][0]
        assert container["args"] == [name]
        assert container["resources"]["limits"] and container["resources"]["requests"]
        assert "livenessProbe" in container and "readinessProbe" in container
        env = {e["name"] for e in container["env"]}
        assert "DSOTP_MQTT__PASSWORD" in env
    # agent specs and dashboards come from the repository's own files
    agents = by_kind(docs, "ConfigMap")["rel-dsotp-agents"]["data"]
    for path in (REPO / "agents").glob("*.yaml"):
        assert agents[path.name] == path.read_text(encoding="utf-8").rstrip("\n")
    grafana = by_kind(docs, "ConfigMap")["rel-dsotp-grafana"]["data"]
    dashboard = REPO / "deploy" / "grafana" / "dashboards" / "dsotp-overview.json"
    assert grafana["dsotp-overview.json"] == dashboard.read_text(encoding="utf-8").rstrip("\n")
    # the ingress serves the API and Grafana over TLS
    ingress = next(iter(by_kind(docs, "Ingress").values()))
    assert ingress["spec"]["tls"][0]["secretName"] == "dsotp-tls"
    assert len(ingress["spec"]["rules"]) == 2
    config = by_kind(docs, "ConfigMap")["rel-dsotp-config"]["data"]
    assert config["DSOTP_KAFKA__URL"] == "kafka://rel-dsotp-kafka-kafka-bootstrap:9092"
    assert config["DSOTP_MQTT__HOST"] == "rel-dsotp-rabbitmq"


def test_external_components_render_and_validate(tmp_path: Path) -> None:
    text, docs = render("external-values.yaml")
    report = validate(text, tmp_path)
    assert "WARN" not in report, report  # nothing left that lacks a schema
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"StatefulSet", "Kafka", "KafkaNodePool", "Secret"}
    assert set(by_kind(docs, "Deployment")) == {
        f"rel-dsotp-{n}" for n in ("bridge", "worker", "api")
    }
    assert by_kind(docs, "Deployment")["rel-dsotp-worker"]["spec"]["replicas"] == 4
    config = by_kind(docs, "ConfigMap")["rel-dsotp-config"]["data"]
    assert config["DSOTP_MQTT__HOST"] == "databus.grid.example"
    assert config["DSOTP_KAFKA__URL"].startswith("kafka://kafka-0.grid.example:9093")
    assert config["DSOTP_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["DSOTP_INFLUX__API"] == "v2"
    api = by_kind(docs, "Deployment")["rel-dsotp-api"]["spec"]["template"]["spec"]
    token = next(e for e in api["containers"][0]["env"] if e["name"] == "DSOTP_API__TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "dsotp-credentials"


def test_missing_secrets_stop_the_render() -> None:
    result = subprocess.run(
        [helm(), "template", "rel", str(CHART)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "secrets.mqttPassword" in result.stderr


@pytest.mark.parametrize("bad", ["FROM python:latest\nRUN cd /tmp && pip install x\n"])
def test_dockerfile_passes_hadolint_and_hadolint_catches_faults(tmp_path: Path, bad: str) -> None:
    hadolint = str(BIN / "hadolint")
    ok = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "Dockerfile"
    broken.write_text(bad, encoding="utf-8")
    caught = subprocess.run([hadolint, str(broken)], capture_output=True, text=True)
    assert caught.returncode != 0
    assert "DL3007" in caught.stdout  # :latest
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "USER 10001" in text  # non-root
