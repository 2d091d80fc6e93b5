"""Client tokens through a real router to real workers: a refused client never reaches a worker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contract import close_codes as codes
from tests.jsclient import js_client, requires_node, run_js_client
from tests.pool import Pool, pool
from tests.support import JsonClient, WorkerProcess, YjsClient, worker_and_router
from tests.tokens import SECRET, Closed, bad_tokens, closed_with, mint


def auth_env(tmp: Path) -> dict[str, str]:
    return {"STORAGE_DIR": str(tmp / "storage"), "AUTH_SECRET": SECRET}


async def worker_sample(worker: WorkerProcess, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{worker.http}/metrics", timeout=5)).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def routed(p: Pool) -> float:
    return sum(p.metric("collab_router_routed_total", worker=name) for name in p.workers)


async def assert_no_worker_reached(p: Pool, reason: str) -> None:
    """Nothing was routed, and no worker saw a refusal of its own, a session or a connection."""
    assert routed(p) == 0
    for worker in p.workers.values():
        assert await worker_sample(worker, "collab_protocol_errors_total", reason=reason) == 0
        assert await worker_sample(worker, "collab_sessions_active") == 0
        assert await worker_sample(worker, "collab_session_load_seconds_count") == 0


def events(log: Path, event: str) -> int:
    count = 0
    for line in log.read_text().splitlines():
        try:
            count += json.loads(line).get("event") == event
        except ValueError:
            continue  # uvicorn's own plain lines
    return count


async def refusals(url: str, token: str) -> list[tuple[str, Closed]]:
    """The token on each protocol and carrier: (what was tried, how the router closed it)."""
    offered = [token] if token else []  # no token: nothing offered
    return [
        ("yjs query", await closed_with(f"{url}/yjs/r1/a.txt?token={token}")),
        ("yjs protocol", await closed_with(f"{url}/yjs/r1/a.txt", subprotocols=offered)),
        ("json query", await closed_with(f"{url}/?token={token}")),
        ("json protocol", await closed_with(f"{url}/ws", subprotocols=offered)),
    ]


class TestThroughTheRouter:
    async def test_a_valid_token_reaches_the_owner_on_both_protocols_and_carriers(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 2, auth_env(tmp_path), auth_secret=SECRET) as p:
            token = mint("alice", ["r1"])
            async with YjsClient.connect(p.url, f"r1/a.txt?token={token}") as y:
                await asyncio.wait_for(y.synced.wait(), 5)
                await y.insert(0, "hello")
            # The worker selected the token; its 101 is relayed to the client as it is.
            async with YjsClient.connect(p.url, "r1/a.txt", subprotocols=[token]) as y:
                assert y.ws.subprotocol == token
                await y.wait_text("hello")
            async with JsonClient.connect(p.url, f"/?token={token}") as c:
                assert (await c.join("r1", "alice"))["containerId"] == p.owner("r1")
            # The router answers the JSON handshake itself, and selects the token too.
            async with JsonClient.connect(p.url, "/ws", subprotocols=[token]) as c:
                assert c.ws.subprotocol == token
                assert (await c.join("r1", "alice"))["containerId"] == p.owner("r1")
                assert await c.get_file("a.txt") == "hello"
            assert routed(p) == 4
        for name in p.workers:
            assert events(tmp_path / f"{name}.log", "auth_disabled") == 0

    async def test_bad_or_missing_tokens_are_refused_with_4401_and_never_reach_a_worker(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 2, auth_env(tmp_path), auth_secret=SECRET) as p:
            cases = {**bad_tokens(), "missing": ("", "missing token: send a JWT as ?token=")}
            for name, (token, cause) in cases.items():
                for tried, closed in await refusals(p.url, token):
                    assert closed.code == codes.UNAUTHENTICATED, (name, tried, closed)
                    assert cause in closed.reason, (name, tried, closed)
                    offered = token if "protocol" in tried and token else None
                    assert closed.subprotocol == offered, (name, tried)
                    if tried.startswith("json"):
                        assert closed.messages == [
                            {
                                "type": "error",
                                "error": "Authentication failed",
                                "reason": closed.reason,
                            }
                        ]
            refused = p.metric("collab_router_client_errors_total", reason="unauthenticated")
            assert refused == 4 * len(cases)
            await assert_no_worker_reached(p, "unauthenticated")

    async def test_joins_and_sessions_the_token_does_not_allow_get_4403_before_routing(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 2, auth_env(tmp_path), auth_secret=SECRET) as p:
            token = mint("alice", ["r1"])
            yjs = [
                await closed_with(f"{p.url}/yjs/r2/a.txt?token={token}"),
                await closed_with(f"{p.url}/yjs/r2", subprotocols=[token]),
            ]
            for closed in yjs:
                assert closed.code == codes.FORBIDDEN
                assert closed.reason.startswith("token does not allow session r2")
            assert yjs[1].subprotocol == token
            for join, reason in (
                ({"sessionId": "r1", "userId": "bob"}, "token is for user alice, join says bob"),
                ({"sessionId": "r2", "userId": "alice"}, "token does not allow session r2"),
            ):
                closed = await closed_with(f"{p.url}/?token={token}", send={"type": "join", **join})
                assert closed.code == codes.FORBIDDEN and closed.reason.startswith(reason)
                assert closed.messages == [
                    {"type": "error", "error": "Access denied", "reason": closed.reason}
                ]
            assert p.metric("collab_router_client_errors_total", reason="forbidden") == 4
            await assert_no_worker_reached(p, "forbidden")

    async def test_a_star_token_reaches_any_session(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2, auth_env(tmp_path), auth_secret=SECRET) as p:
            token = mint("alice", "*")
            for session in ("star-1", "star-2", "star-3"):
                async with JsonClient.connect(p.url, f"/?token={token}") as c:
                    assert (await c.join(session, "alice"))["containerId"] == p.owner(session)
                async with YjsClient.connect(p.url, f"{session}?token={token}") as y:
                    await asyncio.wait_for(y.synced.wait(), 5)


async def test_without_auth_secret_worker_and_router_each_warn_once_at_start(
    tmp_path: Path,
) -> None:
    env = {"WORKER_ID": "w-open"}
    async with worker_and_router(tmp_path, env) as (_, router, stopped):
        # ...and stays open: anyone joins as anyone.
        async with JsonClient.connect(router.url) as c:
            assert (await c.join("open", "mallory"))["containerId"] == "w-open"
    assert stopped.worker == stopped.router == 0
    assert events(tmp_path / "worker.log", "auth_disabled") == 1
    assert events(tmp_path / "router.log", "auth_disabled") == 1


@pytest.mark.node
@requires_node
class TestYWebsocketThroughTheRouter:
    async def test_tokens_on_either_carrier_sync_and_edits_reach_a_second_client(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 2, auth_env(tmp_path), auth_secret=SECRET) as p:
            url, room = f"{p.url}/yjs", "js-auth/src/a.py"
            alice, bob = mint("alice", ["js-auth"]), mint("bob", ["js-auth"])
            async with js_client(url, room, token=alice, token_carrier="query") as a:
                await a.insert("[alice]")
                seen = await run_js_client(
                    url,
                    room,
                    token=bob,
                    token_carrier="protocol",
                    insert="[bob]",
                    expect_contains=["[alice]", "[bob]"],
                )
                state = await a.wait(expect_contains=["[alice]", "[bob]"])
                assert state["text"] == seen["text"]
            assert routed(p) == 2

    async def test_refusals_reach_y_websocket_as_close_codes_on_either_carrier(
        self, tmp_path: Path
    ) -> None:
        """Because the token subprotocol is selected, ``ws`` sees 4401/4403, not 1006."""
        async with pool(tmp_path, 2, auth_env(tmp_path), auth_secret=SECRET) as p:
            url, room = f"{p.url}/yjs", "js-auth/src/a.py"
            cases = {
                "expired query": (mint(expires_in=-3600), "query", 4401, "token expired at"),
                "expired protocol": (mint(expires_in=-3600), "protocol", 4401, "token expired at"),
                "forged protocol": (bad_tokens()["forged"][0], "protocol", 4401, "signature"),
                "other session": (mint("alice", ["elsewhere"]), "protocol", 4403, "js-auth"),
            }
            results: dict[str, dict[str, object]] = {}

            async def one(name: str, token: str, carrier: str) -> None:
                results[name] = await run_js_client(
                    url, room, token=token, token_carrier=carrier, expect_close=True
                )

            async with anyio.create_task_group() as tg:
                for name, (token, carrier, _, _) in cases.items():
                    tg.start_soon(one, name, token, carrier)
            for name, (_, _, code, cause) in cases.items():
                assert results[name]["closeCode"] == code, (name, results[name])
                assert cause in str(results[name]["closeReason"]), (name, results[name])
                assert results[name]["synced"] is False
            assert routed(p) == 0
