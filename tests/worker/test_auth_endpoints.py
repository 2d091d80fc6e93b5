"""Client tokens at a real worker with AUTH_SECRET: both protocols, both carriers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contract import close_codes as codes
from tests.jsclient import requires_node, run_js_client
from tests.support import (
    JsonClient,
    RunningWorker,
    YjsClient,
    eventually,
    run_worker,
    settings_for,
)
from tests.tokens import SECRET, bad_tokens, closed_with, mint
from worker.settings import StorageSettings


@pytest.fixture
async def auth_worker(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"), auth_secret=SECRET)
    async with run_worker(settings) as running:
        yield running


def sample(worker: RunningWorker, name: str, **labels: str) -> float:
    return worker.app.state.metrics.registry.get_sample_value(name, labels) or 0.0


async def untouched(worker: RunningWorker, session: str) -> bool:
    """Nothing was loaded or stored for ``session``: the refusal came before any state."""
    store = worker.app.state.worker.store
    return (
        not worker.manager.sessions
        and sample(worker, "collab_session_load_seconds_count") == 0
        and not await store.session_exists(session)
    )


class TestYjs:
    async def test_a_valid_token_in_the_query_opens_the_document(
        self, auth_worker: RunningWorker
    ) -> None:
        token = mint("alice", ["s1"])
        async with YjsClient.connect(auth_worker.url, f"s1/a.txt?token={token}") as y:
            await asyncio.wait_for(y.synced.wait(), 5)
            assert y.ws.subprotocol is None

    async def test_a_valid_token_as_the_subprotocol_opens_the_document_and_is_selected(
        self, auth_worker: RunningWorker
    ) -> None:
        token = mint("alice", ["s1"])
        async with YjsClient.connect(auth_worker.url, "s1/a.txt", subprotocols=[token]) as y:
            await asyncio.wait_for(y.synced.wait(), 5)
            assert y.ws.subprotocol == token

    @pytest.mark.parametrize("name", sorted(bad_tokens()))
    async def test_bad_tokens_are_closed_with_4401_before_the_session_is_touched(
        self, auth_worker: RunningWorker, name: str
    ) -> None:
        token, cause = bad_tokens()[name]
        url = f"{auth_worker.url}/yjs/s1/a.txt"
        for target, offered in ((f"{url}?token={token}", ()), (url, (token,))):
            closed = await closed_with(target, subprotocols=offered)
            assert closed.code == codes.UNAUTHENTICATED and cause in closed.reason
            # Selected even though refused, so that a browser sees the code, not a failed handshake.
            assert closed.subprotocol == (token if offered else None)
        assert await untouched(auth_worker, "s1")
        assert sample(auth_worker, "collab_protocol_errors_total", reason="unauthenticated") == 2

    async def test_no_token_is_closed_with_4401_naming_both_carriers(
        self, auth_worker: RunningWorker
    ) -> None:
        closed = await closed_with(f"{auth_worker.url}/yjs/s1", subprotocols=["y-websocket"])
        assert (closed.code, closed.reason) == (
            codes.UNAUTHENTICATED,
            "missing token: send a JWT as ?token=... or as a Sec-WebSocket-Protocol entry"
            " (this server has AUTH_SECRET set)",
        )
        assert closed.subprotocol is None
        assert await untouched(auth_worker, "s1")

    async def test_a_session_the_token_does_not_list_is_closed_with_4403(
        self, auth_worker: RunningWorker
    ) -> None:
        token = mint("alice", ["s1"])
        closed = await closed_with(f"{auth_worker.url}/yjs/s2/a.txt?token={token}")
        assert closed.code == codes.FORBIDDEN
        assert closed.reason.startswith("token does not allow session s2")
        assert await untouched(auth_worker, "s2")
        assert sample(auth_worker, "collab_protocol_errors_total", reason="forbidden") == 1


class TestJson:
    async def test_the_tokens_user_joins_an_allowed_session_on_either_carrier(
        self, auth_worker: RunningWorker
    ) -> None:
        token = mint("alice", ["s1"])
        async with JsonClient.connect(auth_worker.url, f"/?token={token}") as c:
            assert (await c.join("s1", "alice"))["userId"] == "alice"
        async with JsonClient.connect(auth_worker.url, "/ws", subprotocols=[token]) as c:
            assert c.ws.subprotocol == token
            assert (await c.join("s1", "alice"))["type"] == "joined"

    async def test_a_star_token_joins_any_session(self, auth_worker: RunningWorker) -> None:
        async with JsonClient.connect(auth_worker.url, f"/?token={mint('alice', '*')}") as c:
            assert (await c.join("any-session", "alice"))["type"] == "joined"

    @pytest.mark.parametrize("name", sorted(bad_tokens()))
    async def test_bad_tokens_get_an_error_then_4401_at_connect(
        self, auth_worker: RunningWorker, name: str
    ) -> None:
        token, cause = bad_tokens()[name]
        for path, offered in ((f"/?token={token}", ()), ("/ws", (token,))):
            closed = await closed_with(auth_worker.url + path, subprotocols=offered)
            assert closed.code == codes.UNAUTHENTICATED and cause in closed.reason
            assert closed.messages == [
                {"type": "error", "error": "Authentication failed", "reason": closed.reason}
            ]
            assert closed.subprotocol == (token if offered else None)
        assert sample(auth_worker, "collab_protocol_errors_total", reason="unauthenticated") == 2

    async def test_no_token_gets_an_error_then_4401(self, auth_worker: RunningWorker) -> None:
        closed = await closed_with(auth_worker.url + "/")
        assert closed.code == codes.UNAUTHENTICATED
        assert closed.messages[0]["error"] == "Authentication failed"

    @pytest.mark.parametrize(
        ("session", "user", "reason"),
        [
            ("s1", "bob", "token is for user alice, join says bob"),
            ("s2", "alice", "token does not allow session s2"),
        ],
    )
    async def test_a_join_the_token_does_not_allow_gets_an_error_then_4403(
        self, auth_worker: RunningWorker, session: str, user: str, reason: str
    ) -> None:
        join = {"type": "join", "sessionId": session, "userId": user}
        closed = await closed_with(f"{auth_worker.url}/?token={mint('alice', ['s1'])}", send=join)
        assert closed.code == codes.FORBIDDEN and closed.reason.startswith(reason)
        assert closed.messages == [
            {"type": "error", "error": "Access denied", "reason": closed.reason}
        ]
        assert await untouched(auth_worker, session)
        assert sample(auth_worker, "collab_protocol_errors_total", reason="forbidden") == 1


class TestAttribution:
    async def test_yjs_edits_are_made_and_logged_as_the_tokens_user(
        self, auth_worker: RunningWorker
    ) -> None:
        """y-websocket clients are anonymous without auth; with a token they are its ``sub``."""
        watcher, editor = mint("watcher", ["att"]), mint("carol", ["att"])
        async with (
            JsonClient.connect(auth_worker.url, f"/?token={watcher}") as j,
            YjsClient.connect(auth_worker.url, "att/a.txt", subprotocols=[editor]) as y,
        ):
            await j.join("att", "watcher")
            await asyncio.wait_for(y.synced.wait(), 5)
            await y.insert(0, "hi")
            assert (await j.recv("yjsUpdate"))["userId"] == "carol"
        store = auth_worker.app.state.worker.store

        async def logged_edits() -> list[dict[str, object]]:
            return [e for e in await store.read_log("att") if e.get("op") == "edit"]

        entries = await eventually(logged_edits, 5, "the edit in the operations log")
        assert [e["userId"] for e in entries] == ["carol"]


@pytest.mark.node
@requires_node
class TestYWebsocket:
    async def test_y_websocket_syncs_with_a_token_and_sees_refusals_on_either_carrier(
        self, auth_worker: RunningWorker
    ) -> None:
        """The worker selects the token subprotocol, which ``ws`` insists on, refused or not."""
        url, room = f"{auth_worker.url}/yjs", "js/a.py"
        good, expired = mint("alice", ["js"]), mint("alice", ["js"], expires_in=-3600)
        for carrier in ("query", "protocol"):
            state = await run_js_client(
                url,
                room,
                token=good,
                token_carrier=carrier,
                insert=carrier,
                expect_contains=[carrier],
            )
            assert state["synced"] is True
            closed = await run_js_client(
                url, room, token=expired, token_carrier=carrier, expect_close=True
            )
            assert closed["closeCode"] == codes.UNAUTHENTICATED, closed
            assert str(closed["closeReason"]).startswith("token expired at")


class TestWithoutAuthSecret:
    async def test_everything_stays_open_and_no_subprotocol_is_selected(
        self, worker: RunningWorker
    ) -> None:
        token = mint("alice", ["s1"])
        async with YjsClient.connect(worker.url, "other/a.txt", subprotocols=[token]) as y:
            await asyncio.wait_for(y.synced.wait(), 5)
            assert y.ws.subprotocol is None
        async with JsonClient.connect(worker.url, "/", subprotocols=[token]) as c:
            assert c.ws.subprotocol is None
            assert (await c.join("other", "mallory"))["userId"] == "mallory"
