"""`percepnet-relay serve` at start-up: a model that cannot load, or a bad PNR_* setting, ends
the process at once with one ``error:`` line (it never listens half-alive), and the API docs
load nothing from another host."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_cli import assert_one_line_error, run_cli

from loadtest.relay_load import may_run_realtime
from loadtest.server import serve_on_loopback
from model.runtime import DEFAULT_MODEL
from service.app import create_app
from service.cluster import free_port
from service.settings import Settings

START_TIMEOUT_S = 60.0  # imports and model loading on a loaded machine; a hang fails here


def serve_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``serve`` on a free loopback port, waited for; a process still running is a failure."""
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(free_port()), *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, timeout=START_TIMEOUT_S, check=False
    )


def bad_models(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not a protobuf" * 64)
    models = {
        "missing": (tmp_path / "absent.onnx", "not found"),
        "corrupt": (corrupt, "not a loadable ONNX model"),
    }
    if DEFAULT_MODEL.exists():
        altered = tmp_path / "altered.onnx"
        shutil.copyfile(DEFAULT_MODEL, altered)
        (tmp_path / "altered.onnx.sha256").write_text("0" * 64 + "  altered.onnx\n")
        models["sha mismatch"] = (altered, "does not match")
    return models


@pytest.mark.parametrize("case", ["missing", "corrupt", "sha mismatch"])
def test_serve_exits_at_once_when_the_model_cannot_load(tmp_path: Path, case: str) -> None:
    models = bad_models(tmp_path)
    if case not in models:
        pytest.skip("no shipped model to alter")
    path, reason = models[case]
    result = serve_process("--model", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert reason in result.stderr and path.name in result.stderr


def test_a_relay_that_fails_to_start_stops_its_server(tmp_path: Path) -> None:
    """The fallback when start-up fails after the server listens (here: a broken runtime):
    the server stops and ``serve`` reports the failure instead of answering /livez."""
    code = (
        "import sys\n"
        "from service.server import serve\n"
        "from service.settings import Settings\n"
        "ok = serve(Settings(host='127.0.0.1', port=0), runtime=object())\n"
        "sys.exit(0 if ok else 3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "relay failed to start" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("PNR_ICE_SERVERS", "junk", "PNR_ICE_SERVERS is not valid JSON"),
        ("PNR_ICE_SERVERS", '[{"url": "stun:x"}]', "PNR_ICE_SERVERS.0.urls"),
        ("PNR_PORT", "99999", "PNR_PORT"),
        ("PNR_MAX_ROOMS", "many", "PNR_MAX_ROOMS"),
        ("PNR_LOG_FORMAT", "xml", "PNR_LOG_FORMAT"),
    ],
)
@pytest.mark.parametrize("command", [["serve"], ["token", "room"]])
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = run_cli(capsys, *command)
    assert_one_line_error(code, err, named)
    assert out == ""


def test_a_bad_serve_option_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_cli(capsys, "serve", "--port", "70000")
    assert_one_line_error(code, err, "--port", "65535")


def test_a_bad_setting_from_the_console_script_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "PNR_ICE_SERVERS": "junk"},
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: PNR_ICE_SERVERS") and result.stderr.count("\n") == 1


def test_the_api_docs_load_only_from_this_server() -> None:
    app = create_app(Settings())

    async def fetch_all() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # no lifespan: no model needed for the docs
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            pages = {path: await client.get(path) for path in ("/docs", "/redoc")}
            named = set()
            for page in pages.values():
                assert page.status_code == 200
                named |= set(re.findall(r'(?:src|href)="([^"]+)"', page.text))
                named |= set(re.findall(r"url: '([^']+)'", page.text))
                assert not re.search(r"(?:https?:)?//", page.text), page.text
            assert any(asset.endswith(".js") for asset in named)
            assert any(asset.endswith(".css") for asset in named)
            return pages | {asset: await client.get(asset) for asset in named}

    responses = asyncio.run(fetch_all())
    for asset, response in responses.items():
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset
    assert '"validatorUrl": null' in responses["/docs"].text  # no badge from validator.swagger.io


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
def test_realtime_scheduling_refused_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setenv("PNR_REALTIME_PRIORITY", "40")
    code, out, err = run_cli(capsys, "serve", "--port", str(free_port()))
    assert_one_line_error(code, err, "PNR_REALTIME_PRIORITY=40", "CAP_SYS_NICE")
    assert out == ""


@pytest.mark.skipif(not (DEFAULT_MODEL.exists() and may_run_realtime(5)), reason="no SCHED_FIFO")
def test_realtime_priority_puts_every_thread_of_the_relay_under_sched_fifo() -> None:
    served = serve_on_loopback({"PNR_REALTIME_PRIORITY": "5", "PNR_DRAIN_SECONDS": "0"})
    try:
        threads = [int(task.name) for task in Path(f"/proc/{served.process.pid}/task").iterdir()]
        assert len(threads) >= 2  # the event loop and the enhancement thread among them
        for tid in threads:
            assert os.sched_getscheduler(tid) == os.SCHED_FIFO, tid
            assert os.sched_getparam(tid).sched_priority == 5, tid
    finally:
        served.stop()


def test_a_relay_from_another_source_tree_runs_that_tree(tmp_path: Path) -> None:
    """``browser_delay --a-source DIR`` passes ``PYTHONPATH=DIR``: the relay must import DIR's
    code, not the tree that ``python -m`` would put first from the working directory."""
    other = tmp_path / "other-tree"
    (other / "service").mkdir(parents=True)
    (other / "service" / "__init__.py").write_text("")
    (other / "service" / "cli.py").write_text(
        "import sys\nprint('other tree', __file__)\nsys.exit(3)\n"
    )
    with pytest.raises(RuntimeError, match="exited with 3") as raised:
        serve_on_loopback({"PYTHONPATH": str(other)}, capture_output=True, timeout=30)
    assert f"other tree {other / 'service' / 'cli.py'}" in str(raised.value)
