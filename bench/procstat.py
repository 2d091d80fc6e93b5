"""A server's CPU seconds and resident memory, read from /proc (Linux), over its process tree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a `collab worker` or npm wrapper may fork)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue  # the task exited meanwhile
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0  # a zombie has no VmRSS


@dataclass(frozen=True)
class Sample:
    cpu: float
    rss: int


def sample(pid: int) -> Sample:
    """CPU seconds and RSS summed over the tree; processes that vanish count as 0."""
    cpu, rss = 0.0, 0
    for p in tree(pid):
        try:
            cpu += cpu_seconds(p)
            rss += rss_bytes(p)
        except (OSError, ValueError):
            continue
    return Sample(cpu, rss)


def system_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, all processes, the kernel's
    interrupts included), from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS  # up to steal; guest time is inside user already
