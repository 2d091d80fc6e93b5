"""``python -m bench.chaos --duration SECONDS --seed N [--loopback] [--json] [--keep]``

A cluster (SeaweedFS, 3 workers, 2 routers, a client host; network namespaces unless
``--loopback``), random overlapping faults drawn from the seed, an independent checker. Prints
a line per fault while it runs (on stderr with ``--json``), then the verdict: a table, or one
JSON object with ``--json``. Exit 0 when every guarantee held, 1 when one broke, 2 when the run
could not be carried out, 130 when interrupted (everything is torn down first). The run
directory (logs, histories, faults.jsonl, owners.jsonl, storage) is removed unless ``--keep``
or the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from . import report as verdict
from .cluster import fresh_run_dir, remove_run_dir
from .hosts import namespaces_unavailable
from .run import Options, run

INTERRUPTED = 130


def parse(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults (60)")
    p.add_argument("--seed", type=int, default=0, help="draws the fault schedule (0)")
    p.add_argument("--loopback", action="store_true", help="127.0.0.1, no namespaces or root")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    p.add_argument("--run-dir", type=Path, help="parent of the run directory (a temp dir)")
    p.add_argument("--lease-ttl-ms", type=int, default=3000, help="workers' LEASE_TTL_MS")
    p.add_argument(
        "--workload", default="", help='extra workload arguments, e.g. "--sessions 2 --rate 2"'
    )
    args = p.parse_args(argv)
    if args.duration <= 0:
        p.error("--duration must be > 0")
    if not args.loopback and (why := namespaces_unavailable()):
        p.error(why)
    options = Options(
        duration=args.duration,
        seed=args.seed,
        loopback=args.loopback,
        run_dir=args.run_dir,
        lease_ttl_ms=args.lease_ttl_ms,
        workload_args=tuple(shlex.split(args.workload)),
    )
    return options, args


async def _main(options: Options, run_dir: Path, say: Any) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    signalled: list[int] = []

    def interrupt(sig: int) -> None:
        if not signalled:  # a second signal must not cut the teardown short
            signalled.append(sig)
            say(f"{signal.Signals(sig).name}: healing and tearing down")
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt, sig)
    return await run(options, run_dir, say)


def main(argv: list[str] | None = None) -> int:
    options, args = parse(argv)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    run_dir = fresh_run_dir(options.run_dir)
    say(f"run directory: {run_dir}")
    code = verdict.NOT_RUN
    try:
        result = asyncio.run(_main(options, run_dir, say))
        code = verdict.exit_code(result)
        print(verdict.as_json(result) if args.json else verdict.table(result), flush=True)
    except (asyncio.CancelledError, KeyboardInterrupt):
        say("interrupted; everything torn down")
        code = INTERRUPTED
    except Exception as exc:
        say("the run failed:\n" + "".join(traceback.format_exception(exc)))
        if args.json:
            print(verdict.as_json({"error": str(exc), "run_dir": str(run_dir)}), flush=True)
    finally:
        if args.keep or code != 0:
            say(f"kept: {run_dir}")
        else:
            remove_run_dir(run_dir)
    return code


if __name__ == "__main__":
    sys.exit(main())
