"""CPU and memory of processes and of the machine, read from /proc (Linux only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


@dataclass
class CpuMeter:
    """CPU use of a set of processes and of the whole machine between two `mark`s."""

    pids: Sequence[int]
    _t: float = 0.0
    _proc: float = 0.0
    _machine: tuple[int, int] = (0, 0)

    def _read(self) -> tuple[float, float, tuple[int, int]]:
        loop_time = asyncio.get_running_loop().time()
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return loop_time, total, machine_jiffies()

    def mark(self) -> None:
        self._t, self._proc, self._machine = self._read()

    def since_mark(self) -> tuple[float, float]:
        """(percent of one core used by the processes, percent of the whole machine busy)."""
        t, proc, (busy, total) = self._read()
        elapsed = max(t - self._t, 1e-9)
        proc_pct = 100.0 * (proc - self._proc) / elapsed
        d_total = total - self._machine[1]
        machine_pct = 100.0 * (busy - self._machine[0]) / d_total if d_total else 0.0
        return proc_pct, machine_pct
