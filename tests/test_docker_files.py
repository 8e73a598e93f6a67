"""The Docker files cannot be built here (no engine); check what can rot without one: the
dashboard queries only metrics the relay exports, and the files reference what exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

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
    assert "USER relay" in dockerfile and "HEALTHCHECK" in dockerfile and "/livez" in dockerfile
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
