"""Where a server's CPU goes in one benchmark shape: py-spy attached over the measured window.

    python -m bench.profile --shape rooms --duration 15 --out /tmp/prof
    python -m bench.profile --shape max --server '{"name": ..., "cmd": ...}' --out /tmp/prof
    python -m bench.profile --shape idle --phase connect    # while the clients connect

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
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.run import SHAPES, drive, s3_server
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
    lines = [f"{samples} samples", "", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total %  function (with what it calls)"]
    lines += [f"{100 * n / samples:7.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """CPU seconds (user, system) per thread of ``pid``, by thread name and id."""
    out: dict[str, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{name} {task.name}"] = (int(fields[11]) / _TICKS, int(fields[12]) / _TICKS)
    return out


def _function(frame: str) -> str:
    """``send (websockets/protocol.py:343)`` → ``send (websockets/protocol.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/perf/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


async def profile(
    spec: ServerSpec,
    shape_key: str,
    duration: float,
    out: Path,
    phase: str = "window",
    all_threads: bool = False,
    extra: dict[str, str] | None = None,
) -> str:
    """``phase``: "window" (the measured window) or "connect" (while the clients connect);
    ``all_threads``: every thread's samples (each stack starts with its thread), not only
    those holding the GIL, with native frames (system calls show as such)."""
    shape = SHAPES[shape_key]
    raw = out / f"{shape_key}-{phase}.txt"
    async with running(spec, extra=extra) as server:
        spy: asyncio.subprocess.Process | None = None
        before: dict[str, tuple[float, float]] = {}
        after: dict[str, tuple[float, float]] = {}

        # Native frames need py-spy to pause the process for each sample.
        threads_args = ["--threads", "--native"] if all_threads else ["--gil", "--nonblocking"]

        async def attach() -> None:
            nonlocal spy, before
            before = thread_cpu(server.pid)
            limit = ["-d", str(int(duration))] if phase == "window" else []
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"),
                "record", "-p", str(server.pid), *threads_args, "-f", "raw", "-o", str(raw),
                *limit, "-r", "200",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

        async def connected() -> None:
            nonlocal after
            if phase == "window":
                await attach()
            elif spy is not None:
                after = thread_cpu(server.pid)
                spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
                await spy.wait()

        if phase == "connect":
            await attach()
        prefix = f"p{int(time.time()) % 100000}-{shape_key}"
        window = await drive(
            server.url, spec.framing, shape, duration, 8, prefix, {"server": server.pid},
            connected=connected,
        )  # fmt: skip
        if phase == "window":
            after = thread_cpu(server.pid)  # the window, plus the load generators' grace
        if spy is not None:
            await spy.wait()
    threads = []
    for name, (user, system) in after.items():
        user0, system0 = before.get(name, (0.0, 0.0))
        threads.append(f"{name}: user {user - user0:.2f} s, system {system - system0:.2f} s")
    report = summarize(raw.read_text()) if raw.exists() else "py-spy wrote nothing"
    cpu = window.cpu_s["server"]
    return (
        f"{report}\n\nserver CPU over the window: {cpu:.2f} s ({100 * cpu / duration:.0f} %)\n"
        "CPU per thread, connected to done (py-spy's overhead included):\n" + "\n".join(threads)
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="rooms", choices=sorted(SHAPES))
    p.add_argument("--server", default="worker", help="a name of bench.target, or JSON")
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--phase", default="window", choices=("window", "connect"))
    p.add_argument("--all-threads", action="store_true", help="every thread, native frames")
    p.add_argument("--out", type=Path, default=Path("/tmp/collab-profile"))
    a = p.parse_args(argv)
    spec = SERVERS[a.server] if a.server in SERVERS else ServerSpec.from_json(a.server)
    a.out.mkdir(parents=True, exist_ok=True)
    with s3_server(spec.needs_s3) as extra:
        print(asyncio.run(profile(spec, a.shape, a.duration, a.out, a.phase, a.all_threads, extra)))


if __name__ == "__main__":
    main()
