"""Where a server's CPU goes in one benchmark shape: py-spy attached over the measured window.

    python -m bench.profile --shape rooms --duration 15 --out /tmp/prof
    python -m bench.profile --shape max --server '{"name": ..., "cmd": ...}' --out /tmp/prof

The server is started as ``bench.run`` starts it and loaded by the same load generators; once
every client is connected, ``py-spy record --gil -f raw`` is attached to its process for the
window (run as a wrapper of the server command, py-spy loses its output when the server is
stopped). Writes ``<out>/<shape>.txt`` (py-spy's collapsed stacks) and prints the functions
with the largest share of the samples, on their own (self) and with what they call (total).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.run import SHAPES, drive
from bench.target import SERVERS, ServerSpec, running

_TICKS = os.sysconf("SC_CLK_TCK")


def summarize(raw: str, top: int = 30) -> str:
    """Self and total shares per function (``name (file)``), from py-spy's raw output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    if not samples:
        return "no samples"
    lines = [f"{samples} samples holding the GIL", "", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total %  function (with what it calls)"]
    lines += [f"{100 * n / samples:7.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread of ``pid``, by thread name and id."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{name} {task.name}"] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def _function(frame: str) -> str:
    """``send (websockets/protocol.py:343)`` → ``send (websockets/protocol.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/perf/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


async def profile(spec: ServerSpec, shape_key: str, duration: float, out: Path) -> str:
    shape = SHAPES[shape_key]
    raw = out / f"{shape_key}.txt"
    async with running(spec) as server:
        spy: asyncio.subprocess.Process | None = None
        before: dict[str, float] = {}

        async def attach() -> None:
            nonlocal spy, before
            before = thread_cpu(server.pid)
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"),
                "record", "-p", str(server.pid), "--gil", "-f", "raw", "-o", str(raw),
                "-d", str(int(duration)), "-r", "200", "--nonblocking",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

        prefix = f"p{int(time.time()) % 100000}-{shape_key}"
        await drive(
            server.url, spec.framing, shape, duration, 8, prefix, {"server": server.pid},
            connected=attach,
        )  # fmt: skip
        after = thread_cpu(server.pid)  # the window, plus the load generators' grace
        if spy is not None:
            await spy.wait()
    threads = [f"{name}: {cpu - before.get(name, 0.0):.2f} s" for name, cpu in after.items()]
    report = summarize(raw.read_text()) if raw.exists() else "py-spy wrote nothing"
    return report + "\n\nCPU per thread (py-spy's overhead included):\n" + "\n".join(threads)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="rooms", choices=sorted(SHAPES))
    p.add_argument("--server", default="worker", help="a name of bench.target, or JSON")
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/collab-profile"))
    a = p.parse_args(argv)
    spec = SERVERS[a.server] if a.server in SERVERS else ServerSpec.from_json(a.server)
    a.out.mkdir(parents=True, exist_ok=True)
    print(asyncio.run(profile(spec, a.shape, a.duration, a.out)))


if __name__ == "__main__":
    main()
