"""What can rot in the Docker files without an engine (``docker/smoke.sh`` builds and runs the
image): the dashboard queries only metrics the relay exports, the files reference what exists,
and the secure defaults hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from service.app import create_app
from service.metrics import RelayMetrics

DOCKER = Path(__file__).resolve().parents[1] / "docker"
yaml = pytest.importorskip("yaml")


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = generate_latest(RelayMetrics().registry).decode()
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", exported, re.M))
    available = set()
    for name, kind in names:
        available.add(name)
        if kind == "histogram":
            available |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        if kind == "counter":
            available.add(f"{name}_total" if not name.endswith("_total") else name)
    dashboard = json.loads((DOCKER / "grafana/dashboards/percepnet-relay.json").read_text())
    used = {
        metric
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for metric in re.findall(r"\bpnr_[a-z_]+", target["expr"])
    }
    assert used and used <= available, used - available


def test_compose_and_dockerfile_reference_what_exists() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert set(compose["services"]) == {"relay", "coturn", "prometheus", "grafana"}
    assert compose["services"]["relay"]["network_mode"] == "host"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            assert (DOCKER / volume.split(":")[0]).exists(), volume
    dockerfile = (DOCKER / "Dockerfile").read_text()
    root = DOCKER.parent
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (root / path).exists(), path
    assert "USER relay" in dockerfile
    assert "pnr-healthcheck.py" in dockerfile[dockerfile.index("HEALTHCHECK") :]
    probe = (DOCKER / "healthcheck.py").read_text()
    assert "/readyz" in probe and "/livez" not in probe
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    # every node of the relay (one per core), as the first lists them on the relay's port
    port = compose["services"]["relay"]["environment"]["PNR_PORT"]
    (discovery,) = prometheus["scrape_configs"][0]["http_sd_configs"]
    assert discovery["url"] == f"http://127.0.0.1:{port}/metrics/targets"
    assert "/metrics/targets" in {getattr(r, "path", None) for r in create_app().routes}


def _env(dockerfile: str, name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", dockerfile)
    assert match, name
    return match.group(1)


def test_stopping_drains_before_the_engine_kills() -> None:
    """docker stop waits 10 s by default, compose the stop_grace_period: the drain, plus the
    seconds closing the calls and exiting take (2–3 s in docker/smoke.sh), must fit in each."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert float(_env(dockerfile, "PNR_DRAIN_SECONDS")) + 4 <= 10
    relay = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["relay"]
    grace_seconds = float(relay["stop_grace_period"].removesuffix("s"))
    assert float(relay["environment"]["PNR_DRAIN_SECONDS"]) + 3 <= grace_seconds


def test_compose_requires_its_secrets_and_keeps_dashboards_on_loopback() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    relay = compose["services"]["relay"]["environment"]
    for name in ("PNR_TOKEN_SECRET", "PNR_ADMIN_TOKEN"):
        assert relay[name].startswith(f"${{{name}:?"), relay[name]
    assert "TURN_PASSWORD:?" in relay["PNR_ICE_SERVERS"]
    assert "change-me" not in text and not re.search(r"\$\{\w+:-\}", text)  # no empty default
    assert "--user=relay:${TURN_PASSWORD:?" in " ".join(compose["services"]["coturn"]["command"])
    assert "--web.listen-address=127.0.0.1:9090" in compose["services"]["prometheus"]["command"]
    assert compose["services"]["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def test_the_build_context_leaves_out_git_and_caches() -> None:
    lines = (DOCKER.parent / ".dockerignore").read_text().split()
    assert lines[lines.index("*") + 1 :], "allow-list after ignoring everything"
    assert "*" in lines and "!.git" not in lines and "**/__pycache__" in lines


def test_every_deployment_of_the_image_shares_a_given_token_secret() -> None:
    """The image generates secrets it is not given, different in each container: nodes that
    must accept each other's tokens are given theirs."""
    for path in DOCKER.glob("compose*.yaml"):
        compose = yaml.safe_load(path.read_text())
        relays = [s for s in compose["services"].values() if "build" in s]
        assert relays, path.name
        for service in relays:
            for name in ("PNR_TOKEN_SECRET", "PNR_ADMIN_TOKEN"):
                assert service["environment"][name].startswith(f"${{{name}:?"), path.name
    manifest = (DOCKER / "kubernetes" / "relay.yaml").read_text()
    for name in ("PNR_TOKEN_SECRET", "PNR_ADMIN_TOKEN"):
        assert re.search(rf"- name: {name}\n\s+valueFrom:\n\s+secretKeyRef:", manifest), name
