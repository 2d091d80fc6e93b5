"""The embedded store writes puts and compare-and-swaps in shared batches (two ``syncfs`` per
batch): what a batch may hold, and that two processes batching over one root stay correct."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from worker.storage import LocalStore

_COUNTER = """
import asyncio, sys
from pathlib import Path
from worker.storage import LocalStore

async def main(root, keys, rounds):
    store = LocalStore(Path(root))

    async def bump(key):
        for _ in range(rounds):
            while True:
                found = await store.get_versioned(key)
                n = 0 if found is None else int(found[0])
                if await store.put_if(key, str(n + 1).encode(), found and found[1]):
                    break

    await asyncio.gather(*(bump(k) for k in keys))

asyncio.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])))
"""


async def test_many_swaps_and_puts_share_batches_and_each_gets_its_outcome(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    await store.put_if("taken", b"first", None)
    swaps = [store.put_if(f"claim/{i}", f"owner-{i}".encode(), None) for i in range(60)]
    puts = [store.put(f"seg/{i}", f"data-{i}".encode()) for i in range(60)]
    refused = store.put_if("taken", b"second", None)  # exists: the condition fails
    versions = await asyncio.gather(*swaps)
    await asyncio.gather(*puts)
    assert await refused is None
    for i, version in enumerate(versions):
        assert await store.get_versioned(f"claim/{i}") == (f"owner-{i}".encode(), version)
        assert await store.get(f"seg/{i}") == f"data-{i}".encode()
    assert await store.get("taken") == b"first"
    assert sorted(await store.list("claim/")) == sorted(f"claim/{i}" for i in range(60))


async def test_swaps_of_one_key_queued_among_other_writes_have_one_winner(
    tmp_path: Path,
) -> None:
    """A batch holds one swap per key: two in one batch would both read the old version under
    one lock and both "win" (a lost update)."""
    store = LocalStore(tmp_path)
    base = await store.put_if("race", b"0", None)
    writes = []
    for i in range(12):
        writes.append(store.put_if("race", f"w{i}".encode(), base))
        writes.append(store.put_if(f"other/{i}", b"x", None))
    results = await asyncio.gather(*writes)
    won = [i for i in range(12) if results[2 * i] is not None]
    assert len(won) == 1
    assert all(results[2 * i + 1] is not None for i in range(12))
    assert await store.get("race") == f"w{won[0]}".encode()


def test_two_processes_swapping_over_one_root_neither_deadlock_nor_lose_a_swap(
    tmp_path: Path,
) -> None:
    """Each process bumps the same counters concurrently (its batches lock several keys at
    once, in path order): every increment lands exactly once."""
    keys = [f"count/{c}" for c in "edcba"]  # listed out of order on purpose
    rounds = 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _COUNTER, str(tmp_path), ",".join(order), str(rounds)]
        )
        for order in (keys, keys[::-1])
    ]
    try:
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:  # a deadlock (what this test looks for) must not outlive it
        for p in procs:
            p.kill()
            p.wait()
    for key in keys:
        assert (tmp_path / key).read_bytes() == str(2 * rounds).encode()
