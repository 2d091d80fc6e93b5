"""The README's scene, hammered: several clients join a fresh file at the same instant and
append, round after round, with both cores busy.

Each client is a process of its own with the client ID pycrdt picks for a new ``Doc``, so the
rounds also probe what the README example's divergence needed (two replicas with one ID,
docs/reliability.md). Every round must end with every client holding every sentence exactly
once; IDs are checked to be distinct, and the worker must not have had to refuse anyone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, run_worker, settings_for
from worker.settings import StorageSettings

ROUNDS = 6
CLIENTS = 4


@pytest.mark.slow
async def test_clients_joining_a_fresh_file_at_once_under_load_all_converge(
    tmp_path: Path,
) -> None:
    settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)
    ]  # both cores busy, as on the loaded machine the divergence was seen on
    ids: list[int] = []
    try:
        async with run_worker(settings) as worker:
            url = worker.url
            for round_ in range(ROUNDS):
                room = f"race-{round_}/hello.txt"
                sentences = [f"<client {i} of round {round_}> " for i in range(CLIENTS)]
                go_at = time.time() + 2.5  # after every process has imported and synced
                procs = [
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tests.race_client",
                        url,
                        room,
                        s,
                        str(go_at),
                        str(CLIENTS),
                        "15",
                        cwd=ROOT,
                        stdout=asyncio.subprocess.PIPE,
                    )
                    for s in sentences
                ]
                try:
                    outs = [await asyncio.wait_for(p.communicate(), 45) for p in procs]
                finally:
                    for p in procs:
                        if p.returncode is None:
                            p.kill()
                results = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]
                ids += [r["client_id"] for r in results]
                texts = {r["text"] for r in results}
                assert len(texts) == 1, json.dumps(results, indent=1)
                (final,) = texts
                assert sorted(final.split("> ")[:-1]) == sorted(s[:-2] for s in sentences), final
                stored = worker.manager.sessions[f"race-{round_}"].text("hello.txt")
                assert str(stored) == final
            conflicts = worker.app.state.metrics.value("collab_client_id_conflicts_total")
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert len(set(ids)) == len(ids) == ROUNDS * CLIENTS
    assert conflicts == 0
