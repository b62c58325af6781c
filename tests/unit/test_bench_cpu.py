"""The latency run's CPU meter (stream/bench/cpu.py): /proc's fields read right, per-event figures
by group, processes that end meanwhile left out."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from stream.bench import cpu
from stream.bench.cpu import CpuMeter, cpu_seconds


def _stat(proc: Path, pid: int, name: str, utime: int, stime: int) -> None:
    # fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime ...
    rest = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime), "0", "0"]
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "stat").write_text(f"{pid} ({name}) " + " ".join(rest) + "\n")


def test_the_fields_after_a_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    _stat(tmp_path, 7, "java (kafka) x", utime=3 * cpu.CLOCK_TICKS, stime=cpu.CLOCK_TICKS)
    assert cpu_seconds(7, tmp_path) == pytest.approx(4.0)
    assert cpu_seconds(8, tmp_path) is None


def test_per_event_by_group_and_a_process_gone_left_out(tmp_path: Path) -> None:
    t = cpu.CLOCK_TICKS
    _stat(tmp_path, 1, "w0", 10 * t, 0)
    _stat(tmp_path, 2, "w1", 20 * t, 0)
    _stat(tmp_path, 3, "java", 5 * t, 5 * t)
    meter = CpuMeter({"workers": [1, 2], "broker": [3], "driver": []}, tmp_path)
    assert set(meter.groups) == {"workers", "broker"}  # an empty group is not reported
    meter.start()
    _stat(tmp_path, 1, "w0", 12 * t, t)  # +3 s
    (tmp_path / "2" / "stat").unlink()  # ended: its CPU is unknown, not counted as zero or negative
    _stat(tmp_path, 3, "java", 6 * t, 5 * t)  # +1 s
    out = meter.stop(events=1_000_000)
    assert out["cpu_us_per_event"] == {"workers": 3, "broker": 1, "all": 4}
    assert out["cores_busy"] is not None and out["cores_busy"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="reads this machine's /proc, which only Linux has")
def test_this_process_cpu_grows_as_it_works() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    after = cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.2
