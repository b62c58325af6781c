"""CPU time of whole processes (every thread), read from Linux's /proc, so a latency run can say
what each ping cost the workers, the broker and the driver, and how busy the cores were.

At 2,000 pings/s on our 2-core machine the pings took most of both cores; `make bench` shows it
next to the percentiles (`cpu_us_per_event`, `cores_busy`) instead of a scratch harness.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """User plus system CPU seconds of the process `pid` so far (all its threads); None when it is
    gone or there is no /proc."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name, in parentheses, may hold spaces: the fields follow its last ")"
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU of groups of processes ("workers": [pid, ...]) between `start` and `stop`."""

    def __init__(self, groups: Mapping[str, list[int]], proc: Path = Path("/proc")) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items() if pids}
        self.proc = proc
        self._first: dict[int, float] = {}
        self._started = 0.0

    def _read(self) -> dict[int, float]:
        out = {}
        for pids in self.groups.values():
            for pid in pids:
                seconds = cpu_seconds(pid, self.proc)
                if seconds is not None:
                    out[pid] = seconds
        return out

    def start(self) -> None:
        self._first = self._read()
        self._started = time.monotonic()

    def stop(self, events: int) -> dict[str, Any]:
        """µs of CPU per event by group (processes that ended meanwhile left out), their sum, and
        `cores_busy`: the groups' CPU seconds per second of the span."""
        last = self._read()
        span = time.monotonic() - self._started
        spent = {name: sum(last[p] - self._first[p] for p in pids if p in last and p in self._first)
                 for name, pids in self.groups.items()}
        total = sum(spent.values())
        per_event = {name: round(s / max(1, events) * 1e6) for name, s in spent.items()}
        per_event["all"] = round(total / max(1, events) * 1e6)
        return {"cpu_us_per_event": per_event, "cores_busy": round(total / span, 2) if span > 0 else None}
