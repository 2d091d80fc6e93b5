"""Unmodified third-party clients through the router: JS y-websocket and pycrdt-websocket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jsclient import js_client, requires_node, run_js_client
from tests.pool import pool
from tests.support import JsonClient, pycrdt_client, wait_until

pytestmark = [pytest.mark.node, requires_node]


async def test_js_and_pycrdt_clients_edit_one_file_through_the_router(tmp_path: Path) -> None:
    async with pool(tmp_path, 3) as p:
        room = "via-router/src/main.py"
        async with (
            js_client(f"{p.url}/yjs", room) as js,
            pycrdt_client(p.http, room) as py_text,
        ):
            await js.insert("[js]")
            await wait_until(lambda: "[js]" in str(py_text), what="pycrdt sees the JS edit")
            py_text.insert(0, "[py]")
            state = await js.wait(expect_contains=["[js]", "[py]"])
            await wait_until(lambda: str(py_text) == state["text"], what="converged")
        async with JsonClient.connect(p.url) as j:
            joined = await j.join("via-router", "json")
            assert joined["containerId"] == p.owner("via-router")
            assert await j.get_file("src/main.py") == state["text"]
        index = await run_js_client(f"{p.url}/yjs", "via-router", index=True)
        assert "src/main.py" in index["keys"]
