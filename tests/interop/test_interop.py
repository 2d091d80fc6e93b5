"""Real third-party clients on one file: JS y-websocket, pycrdt's provider, and the JSON protocol.

All three edit the same document and converge; after the worker restarts on the same storage,
the text is still there (and y-websocket reconnects by itself).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.jsclient import js_client, run_js_client
from tests.support import JsonClient, WorkerProcess, pycrdt_client, wait_until

pytestmark = pytest.mark.node


async def test_js_pycrdt_and_json_clients_converge_and_survive_a_restart(
    backend_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**backend_env, "WORKER_ID": "w-interop", "FLUSH_INTERVAL_MS": "200"}
    worker = WorkerProcess(env, log=tmp_path / "worker.log")
    await worker.start()
    room = "interop/src/shared.py"
    try:
        async with JsonClient.connect(worker.url) as j:
            await j.join("interop", "json-user")
            await j.file_op(type="create", path="src/shared.py", content="[json-start]\n")
            async with (
                js_client(f"{worker.url}/yjs", room) as js,
                pycrdt_client(worker.http, room) as py_text,
            ):
                await js.wait(expect_contains=["[json-start]"])
                await wait_until(lambda: "[json-start]" in str(py_text), what="pycrdt synced")
                # Everyone writes at once.
                current = await j.get_file("src/shared.py") or ""
                await asyncio.gather(
                    js.insert("[from-js]", at=0),
                    j.file_op(
                        type="update", path="src/shared.py", content=current + "[from-json]\n"
                    ),
                )
                py_text.insert(0, "[from-py]")
                tokens = ["[json-start]", "[from-js]", "[from-json]", "[from-py]"]
                final = await js.wait(expect_contains=tokens)
                await wait_until(lambda: str(py_text) == final["text"], what="pycrdt converged")
                assert await j.get_file("src/shared.py") == final["text"]
                assert all(t in final["text"] for t in tokens)

                # Restart the worker on the same storage; y-websocket reconnects by itself.
                assert await worker.stop() == 0
                restarted = WorkerProcess(env, port=worker.port, log=tmp_path / "worker.log")
                await restarted.start()
                worker = restarted
                after = await js.wait(expect_contains=tokens, timeout_ms=20_000)
                assert after["text"] == final["text"]
                assert js.reconnects >= 1
        fresh = await run_js_client(f"{worker.url}/yjs", room, expect_contains=tokens)
        assert fresh["text"] == final["text"]
        async with JsonClient.connect(worker.url) as j2:
            await j2.join("interop", "late-json-user")
            assert await j2.get_file("src/shared.py") == final["text"]
        index = await run_js_client(f"{worker.url}/yjs", "interop", index=True)
        assert "src/shared.py" in index["keys"]
    finally:
        await worker.stop()
