"""The Kubernetes manifests (docker/kubernetes, a kustomize layout) and the two-node compose
file, checked offline against the code: what they set exists, and the drain, readiness, media
and sizing choices hold."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZE = ROOT / "docker" / "kubernetes"
COMPOSE = ROOT / "docker" / "compose.cluster.yaml"
SETTINGS = {f"PNR_{name.upper()}" for name in Settings.model_fields}


def rendered() -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders (offline), or the listed files' objects where
    kubectl is not installed (CI installs Debian's kubernetes-client)."""
    if shutil.which("kubectl"):
        done = subprocess.run(
            ["kubectl", "kustomize", str(KUSTOMIZE)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    kustomization = yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((KUSTOMIZE / name).read_text())
        if doc
    ]


def by_kind(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_kubernetes_relay_nodes_drain_report_readiness_and_share_redis() -> None:
    objects = rendered()
    deployment = by_kind(objects, "Deployment", "relay")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {name for name in env if name.startswith("PNR_")} <= SETTINGS, "unknown setting"

    # media: the host's network (aiortc's random UDP ports), one relay per host
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    port = int(env["PNR_PORT"])
    assert env["PNR_PUBLIC_URL"] == f"http://$(POD_IP):{port}"
    assert [p["containerPort"] for p in container["ports"]] == [port]

    # every node's own /metrics scraped
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"

    # readiness and drain
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in pre_stop and "kill -0 1" in pre_stop
    drain_seconds = float(env["PNR_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= drain_seconds + 10

    # the directory: the redis Service, by name and port
    match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", env["PNR_REDIS_URL"] or "")
    assert match, env["PNR_REDIS_URL"]
    redis_service = by_kind(objects, "Service", match[1])
    assert [p["port"] for p in redis_service["spec"]["ports"]] == [int(match[2])]
    redis_pod = by_kind(objects, "Deployment", "redis")["spec"]["template"]["metadata"]
    assert redis_service["spec"]["selector"].items() <= redis_pod["labels"].items()

    # signaling: a Service onto the relay pods' HTTP port
    service = by_kind(objects, "Service", "relay")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]

    # one node per requested core: the pod's affinity is the whole host (no CPU limit), so
    # serve's own count would take every core of it
    (processes,) = [e for e in container["env"] if e["name"] == "PNR_PROCESSES"]
    assert processes["valueFrom"]["resourceFieldRef"] == {
        "containerName": container["name"],
        "resource": "requests.cpu",
        "divisor": "1",
    }
    # sized from the measured cost (README): ~290 MiB fixed per node + 0.8 MiB and ~9 % of a
    # core per participant, about 10 participants per node; no CPU limit (throttling stalls audio)
    resources = container["resources"]
    nodes = math.ceil(float(resources["requests"]["cpu"]))
    assert _mebibytes(resources["requests"]["memory"]) >= nodes * (290 + 10 * 0.8)
    assert float(resources["requests"]["cpu"]) >= 10 * 0.09
    assert "cpu" not in resources.get("limits", {})
    assert float(env["PNR_NODE_MAX_CPU_PERCENT"]) <= 100


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


def test_two_node_compose_shares_redis_on_distinct_ports() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    relays = {name: s for name, s in compose["services"].items() if name.startswith("relay")}
    assert len(relays) == 2
    ports = set()
    for service in relays.values():
        env = service["environment"]
        assert set(env) <= SETTINGS, "unknown setting"
        assert service["network_mode"] == "host"
        assert env["PNR_REDIS_URL"] == "redis://127.0.0.1:6379/0"
        assert env["PNR_PUBLIC_URL"].endswith(f":{env['PNR_PORT']}")
        context = COMPOSE.parent / service["build"]["context"]
        assert (context / service["build"]["dockerfile"]).is_file()
        # set, not one per core: two containers on one host each taking PORT…PORT+cores-1
        # would collide
        count = int(env["PNR_PROCESSES"])
        assert count >= 1
        ports |= {int(env["PNR_PORT"]) + k for k in range(count)}
    assert len(ports) == sum(int(s["environment"]["PNR_PROCESSES"]) for s in relays.values()), (
        "nodes on one host need ports of their own"
    )
    assert "6379" in compose["services"]["redis"]["command"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl (kubernetes-client)")
def test_kustomize_renders_every_listed_file() -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered())
    assert kinds == [
        "Deployment/redis",
        "Deployment/relay",
        "PodDisruptionBudget/relay",
        "Service/redis",
        "Service/relay",
    ]
