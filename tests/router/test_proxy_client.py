"""The router's own decisions about a client, before any worker relays a byte of it.

Which worker a connection goes to (the session in a ``/yjs/`` path, or in the JSON ``join``),
and what the router answers itself on the JSON path before the join: the same answers a worker
gives, and RFC 6455's refusals. A real router in this event loop, stand-in workers that record
what reaches them (tests/router/fakes.py), raw sockets as clients.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from router import frames, ring
from router.server import Router
from tests.router.fakes import (
    JOIN,
    FakeWorker,
    RawClient,
    client_errors,
    routing,
)
from tests.support import wait_until

NAMES = ("w-0", "w-1", "w-2")


@asynccontextmanager
async def three_workers(**settings: object) -> AsyncIterator[tuple[Router, dict[str, FakeWorker]]]:
    async with AsyncExitStack() as stack:
        workers = {n: await stack.enter_async_context(FakeWorker(n)) for n in NAMES}
        router = await stack.enter_async_context(routing(*workers.values(), **settings))
        yield router, workers


def upgrades(workers: dict[str, FakeWorker]) -> dict[str, list[str]]:
    """Request lines each worker received, by worker."""
    return {
        name: [u.head.split(b"\r\n")[0].decode() for u in w.upgrades] for name, w in workers.items()
    }


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """Any masked frame, also one our frame builder would refuse to make."""
    wire = frames.frame(frames.OP_BINARY, payload, mask=True)
    return bytes([(0x80 if fin else 0) | rsv | opcode]) + wire[1:]


class TestSessionFromPath:
    async def test_a_yjs_connection_goes_to_the_owner_of_the_session_in_its_path(self) -> None:
        """The session is the path's first segment after ``/yjs/``, percent-decoded; the
        worker gets the request as sent, query string included."""
        targets = {
            "/yjs/alpha/src/app.py": "alpha",
            "/yjs/alpha": "alpha",
            "/yjs/beta/": "beta",
            "/yjs/gamma/a/b/c.txt?token=t.o.k&x=1": "gamma",
            "/yjs/a%2Db/notes.md": "a-b",
            "/yjs/a-b/other.md": "a-b",
            "/yjs/delta%2Fx/y": "delta",  # a decoded slash still ends the session
            **{f"/yjs/s{i}/f.txt": f"s{i}" for i in range(12)},
        }
        async with three_workers() as (router, workers):
            for target in targets:
                async with RawClient.connect(router.port, target):
                    pass
            expected: dict[str, list[str]] = {name: [] for name in NAMES}
            for target, session in targets.items():
                owner = ring.owner(session, NAMES)
                assert owner is not None
                expected[owner].append(f"GET {target} HTTP/1.1")
            await wait_until(lambda: sum(len(w.upgrades) for w in workers.values()) == len(targets))
            assert upgrades(workers) == expected
            for worker in workers.values():
                for upgrade in worker.upgrades:
                    assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in upgrade.head


class TestBeforeTheJoin:
    async def test_pings_are_answered_by_the_router_and_never_reach_a_worker(self) -> None:
        async with three_workers() as (router, workers), RawClient.connect(router.port) as c:
            c.send_text({"type": "ping"})
            assert await c.message() == {"type": "pong"}
            c.send(masked(frames.OP_PING, b"are you there"))
            assert await c.frame() == (frames.OP_PONG, b"are you there")
            c.send(masked(frames.OP_PONG, b"unasked"))  # ignored, as RFC 6455 allows
            c.send_text({"type": "ping"})
            assert await c.message() == {"type": "pong"}
            assert upgrades(workers) == {name: [] for name in NAMES}

    @pytest.mark.parametrize(
        ("message", "error"),
        [
            ({"type": "getFiles"}, "Not joined to a session"),
            ({"type": "join", "sessionId": "../etc", "userId": "u"}, "Invalid sessionId"),
            ({"type": "join", "sessionId": "", "userId": "u"}, "Missing sessionId or userId"),
            ("{not json", "Invalid message format"),
        ],
    )
    async def test_a_message_other_than_a_valid_join_is_refused_and_the_client_may_go_on(
        self, message: dict[str, object] | str, error: str
    ) -> None:
        """The worker's own error for each, and then the join still goes through, its frame
        unchanged, to the owner of its session and to no other worker."""
        async with three_workers() as (router, workers), RawClient.connect(router.port) as c:
            c.send_text(message)
            refused = await c.message()
            assert refused["type"] == "error" and refused["error"] == error, refused
            assert upgrades(workers) == {name: [] for name in NAMES}
            assert client_errors(router, "json") == 1
            join = c.send_text(JOIN)
            owner = workers[str(ring.owner("s", NAMES))]
            await wait_until(lambda: bool(owner.upgrades) and owner.upgrades[0].received == join)
            assert sum(len(w.upgrades) for w in workers.values()) == 1
            assert owner.upgrades[0].head.startswith(b"GET / HTTP/1.1\r\n")

    async def test_a_join_in_fragments_reaches_the_owner_as_the_client_sent_it(self) -> None:
        async with three_workers() as (router, workers), RawClient.connect(router.port) as c:
            text = json.dumps({"type": "join", "sessionId": "fragmented", "userId": "u"}).encode()
            first = masked(frames.OP_TEXT, text[:7], fin=False)
            rest = masked(frames.OP_CONT, text[7:20], fin=False) + masked(frames.OP_CONT, text[20:])
            c.send(first + masked(frames.OP_PING, b"between") + rest)
            assert await c.frame() == (frames.OP_PONG, b"between")
            owner = workers[str(ring.owner("fragmented", NAMES))]
            await wait_until(
                lambda: bool(owner.upgrades) and owner.upgrades[0].received == first + rest
            )

    async def test_an_oversize_first_message_is_refused_with_1009(self) -> None:
        async with three_workers(max_message_bytes=4096) as (router, workers):
            async with RawClient.connect(router.port) as c:
                c.send(masked(frames.OP_TEXT, b"x" * 3000, fin=False))
                c.send(masked(frames.OP_CONT, b"x" * 3000))
                error = await c.message()
                assert error["type"] == "error" and "4096-byte limit" in error["reason"]
                code, reason = await c.closed()
                assert code == 1009 and "4096-byte limit" in reason
            async with RawClient.connect(router.port) as c:
                c.send(masked(frames.OP_TEXT, b"x" * 5000)[:4])  # the header is enough
                await c.message()
                assert (await c.closed())[0] == 1009
            assert upgrades(workers) == {name: [] for name in NAMES}

    async def test_a_client_that_never_joins_is_closed_with_1008(self) -> None:
        async with (
            three_workers(join_timeout_ms=300) as (router, workers),
            RawClient.connect(router.port) as c,
        ):
            c.send_text({"type": "ping"})
            assert await c.message() == {"type": "pong"}
            assert await c.closed() == (1008, "no join message in time")
            assert upgrades(workers) == {name: [] for name in NAMES}

    async def test_a_client_close_before_the_join_is_answered_and_goes_nowhere(self) -> None:
        async with three_workers() as (router, workers), RawClient.connect(router.port) as c:
            c.send(masked(frames.OP_CLOSE, (1000).to_bytes(2, "big") + b"bye"))
            assert await c.frame() == (frames.OP_CLOSE, (1000).to_bytes(2, "big"))
            assert await asyncio.wait_for(c.reader.read(), 5) == b""
            assert upgrades(workers) == {name: [] for name in NAMES}


class TestProtocolErrors:
    @pytest.mark.parametrize(
        ("wire", "reason"),
        [
            pytest.param(
                frames.frame(frames.OP_TEXT, b'{"type":"ping"}'),
                "incorrect masking",
                id="unmasked",
            ),
            pytest.param(
                masked(frames.OP_TEXT, b"{}", rsv=0x40), "reserved bits must be 0", id="rsv1"
            ),
            pytest.param(masked(0x3, b"{}"), "invalid opcode", id="opcode-3"),
            pytest.param(masked(0xB, b""), "invalid opcode", id="opcode-b"),
            pytest.param(
                masked(frames.OP_PING, b"p", fin=False),
                "fragmented control frame",
                id="fragmented-ping",
            ),
            pytest.param(
                masked(frames.OP_PING, b"p" * 126),
                "control frame too long",
                id="long-ping",
            ),
            pytest.param(
                masked(frames.OP_CONT, b"{}"),
                "continuation frame without a message",
                id="lone-continuation",
            ),
            pytest.param(
                masked(frames.OP_TEXT, b"{", fin=False) + masked(frames.OP_TEXT, b"}"),
                "new message inside a fragmented one",
                id="interleaved-messages",
            ),
        ],
    )
    async def test_a_frame_rfc_6455_forbids_is_refused_with_1002(
        self, wire: bytes, reason: str
    ) -> None:
        async with three_workers() as (router, workers):
            async with RawClient.connect(router.port) as c:
                c.send(wire)
                code, said = await c.closed()  # no JSON error first: this is not a message
                assert code == 1002 and said.startswith(reason), said
                c.send(masked(frames.OP_CLOSE, (1002).to_bytes(2, "big")))
                assert await asyncio.wait_for(c.reader.read(), 1) == b""
            assert client_errors(router, "protocol_error") == 1
            assert upgrades(workers) == {name: [] for name in NAMES}
            async with RawClient.connect(router.port) as c:  # the router serves on
                c.send_text({"type": "ping"})
                assert await c.message() == {"type": "pong"}
