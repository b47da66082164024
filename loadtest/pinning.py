"""CPU pinning for benchmarks: the measured process on one core, the load on the others."""

from __future__ import annotations

import os
import shutil


def cpu_plan(registry_cpu: int, generator_cpus: str) -> set[int] | None:
    """The CPUs for the load side, so that it cannot starve a registry pinned to its own
    core (None: leave affinity alone)."""
    available = os.sched_getaffinity(0)
    if registry_cpu < 0:
        return None
    if registry_cpu not in available:
        raise ValueError(f"--registry-cpu {registry_cpu} is not one of {sorted(available)}")
    if generator_cpus == "all":
        return set(available)
    if generator_cpus == "rest":
        rest = available - {registry_cpu}
        return rest or set(available)
    try:
        chosen = {int(part) for part in generator_cpus.split(",")}
    except ValueError:
        raise ValueError(
            f"--generator-cpus: expected rest, all or 1,2; got {generator_cpus!r}"
        ) from None
    if not chosen <= available:
        raise ValueError(f"--generator-cpus {generator_cpus} is not within {sorted(available)}")
    return chosen


def pinned(argv: list[str], cpu: int) -> list[str]:
    """`argv` run on CPU `cpu` only (taskset), every thread of it included."""
    taskset = shutil.which("taskset")
    if cpu < 0 or taskset is None:
        return argv
    return [taskset, "--cpu-list", str(cpu), *argv]
