"""The worker's CPU per small S3 PUT (a flush's segment): its own signed request against
miniopy-async's, on SeaweedFS, side by side in one process.

``python -m bench.s3_put [--puts 3000] [--size 300] [--rounds 3] [--json]``

Starts SeaweedFS (``tests.s3server``; or uses ``MINIO_TEST_ENDPOINT``), then alternates rounds
of ``--puts`` PUTs of new ``--size``-byte keys, 32 in flight, through one ``MinioStore``: once
by ``MinioStore._lean_put`` (``worker.storage.s3_signing``), once by the library's
``put_object``. Prints the process's CPU (user + system) per PUT for each, medians over the
rounds and their ratio. The server's CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import uuid
from typing import Any

from tests.s3server import minio_test_kwargs, start_s3_server
from worker.storage import MinioStore


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(kwargs: dict[str, Any], puts: int, size: int, rounds: int) -> dict[str, Any]:
    store = MinioStore(**kwargs)
    body = os.urandom(size)
    gate = asyncio.Semaphore(32)
    per_put: dict[str, list[float]] = {"worker": [], "miniopy-async": []}

    async def put(name: str) -> None:
        async with gate:
            await store.put(f"sessions/bench/updates/{name}.seg", body)

    try:
        await store.check()
        for round_ in range(rounds + 1):  # the first round warms both up and is not counted
            for way in per_put:
                store._lean = way == "worker"
                started = _cpu()
                await asyncio.gather(*(put(f"{way[0]}{round_}-{i:06d}") for i in range(puts)))
                if round_:
                    per_put[way].append(1000 * (_cpu() - started) / puts)
    finally:
        await store.aclose()
    medians = {way: statistics.median(values) for way, values in per_put.items()}
    return {
        "puts": puts,
        "size": size,
        "rounds": rounds,
        "cpu_ms_per_put": per_put,
        "median_ms": medians,
        "ratio": medians["worker"] / medians["miniopy-async"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--puts", type=int, default=3000)
    p.add_argument("--size", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    if os.environ.get("MINIO_TEST_ENDPOINT"):
        result = asyncio.run(measure(minio_test_kwargs(bucket), a.puts, a.size, a.rounds))
    else:
        print("starting an S3 server (SeaweedFS)", file=sys.stderr)
        with start_s3_server() as server:
            kwargs = server.store_kwargs(bucket)
            result = asyncio.run(measure(kwargs, a.puts, a.size, a.rounds))
    if a.json:
        print(json.dumps(result, indent=2))
        return
    medians = result["median_ms"]
    print(f"{a.puts} PUTs of {a.size} B, 32 in flight, {a.rounds} rounds; CPU ms per PUT, median")
    print("| request | CPU ms per PUT | rounds |")
    print("| --- | --- | --- |")
    for way, values in result["cpu_ms_per_put"].items():
        print(f"| {way} | {medians[way]:.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    print(f"worker / miniopy-async: {result['ratio']:.2f}x")


if __name__ == "__main__":
    main()
