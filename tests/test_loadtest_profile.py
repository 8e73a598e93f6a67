"""The load test's profile summary: py-spy's collapsed stacks → CPU by component."""

from pathlib import Path

import pytest

from loadtest.profile import components, read_samples
from service.metrics import thread_group

RAW = """\
thread (0x1): MainThread;Runner.run (asyncio/runners.py:118) 50
thread (0x1): MainThread;Runner.run (asyncio/runners.py:118);OpusPacketEncoder.encode (service/opus.py:1) 30
thread (0x1): MainThread;Runner.run (asyncio/runners.py:118);Protocol.datagram_received (aioice/ice.py:1);Session.unprotect (pylibsrtp/__init__.py:1) 10
thread (0x2): enhance-0;EnhancerPool._run (service/batching.py:1);Session.run (onnxruntime/capi/session.py:1) 20
thread (0x3): enhance-1;EnhancerPool._run (service/batching.py:1);Enhancer.analyze (dsp/enhancer.py:1) 20
thread (0x3): enhance-1;Thread.run (threading.py:982);Condition.wait (threading.py:327) 100
not a stack line
"""  # noqa: E501


def test_thread_names_group_like_the_relay_metrics() -> None:
    assert thread_group("MainThread") == "event_loop"
    assert thread_group("enhance-3") == "enhance"
    assert thread_group("audio-decoder") == "audio-decoder"


def test_busy_samples_share_out_each_thread_groups_measured_cpu(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(RAW)
    samples = read_samples(raw)
    # waits (the event loop idling in uvloop, a shard on its condition) are set apart
    assert samples[("event_loop", "(waiting)")] == 50
    assert samples[("enhance", "(waiting)")] == 100
    # the most specific frame names the component: SRTP under ICE's callback is SRTP
    assert samples[("event_loop", "SRTP")] == 10

    rows = dict(components(samples, {"event_loop": 4.0, "enhance": 2.0, "audio-decoder": 1.0}))
    assert rows["Opus encode (per listener)"] == pytest.approx(3.0)
    assert rows["SRTP"] == pytest.approx(1.0)
    assert rows["network (onnxruntime)"] == pytest.approx(1.0)
    assert rows["DSP kernels (numba)"] == pytest.approx(1.0)
    assert rows["audio-decoder (not sampled)"] == pytest.approx(1.0)
    assert sum(rows.values()) == pytest.approx(7.0)  # adds up to the measured total


def test_a_shard_sleeping_until_its_clock_tick_is_waiting(tmp_path: Path) -> None:
    # time.sleep is C: py-spy's leaf is the Python line that called it, which must not count
    # as the batching code's CPU
    shard = tmp_path / "shard.py"
    shard.write_text("def collect(self, wait):\n    self._sleep(wait)\n    time.sleep(wait)\n")
    raw = tmp_path / "profile.txt"
    raw.write_text(
        f"thread (0x4): enhance-0;EnhancerPool._collect ({shard}:2) 40\n"
        f"thread (0x4): enhance-0;EnhancerPool._collect ({shard}:3) 5\n"
        f"thread (0x4): enhance-0;EnhancerPool._collect ({shard}:1) 7\n"
    )
    samples = read_samples(raw)
    assert samples[("enhance", "(waiting)")] == 45
    assert samples[("enhance", "other")] == 7
