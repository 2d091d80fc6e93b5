"""The health probe: a worker's /readyz over one kept-alive connection, and every failure a
ProbeError (the membership turns it into ``down``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from router.health import HealthProbe, ProbeError
from tests.pool import pool
from tests.s3server import free_port

Answer = Callable[[bytes], bytes | None]  # request head -> what to write back (None: nothing)


def ok(body: bytes = b'{"state":"ready","worker":"w-9"}', extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}"
        "Content-Type: application/json\r\n\r\n"
    ).encode() + body


@asynccontextmanager
async def stand_in(answer: Answer) -> AsyncIterator[tuple[int, list[int]]]:
    """A server on a free port answering each request head with ``answer``; yields (port,
    requests per connection)."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        index = len(connections) - 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                connections[index] += 1
                reply = answer(head)
                if reply is not None:
                    writer.write(reply)
                    if b"Connection: close" in reply:
                        break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        await server.wait_closed()


class TestHealthProbe:
    async def test_rounds_share_one_kept_alive_connection(self) -> None:
        async with stand_in(lambda head: ok()) as (port, connections):
            probe = HealthProbe()
            for _ in range(5):
                status, body = await probe.readyz("127.0.0.1", port, 1)
                assert (status, body["worker"]) == (200, "w-9")
            probe.close()
        assert connections == [5]

    async def test_a_worker_that_closes_after_answering_gets_a_new_connection(self) -> None:
        async with stand_in(lambda head: ok(extra="Connection: close\r\n")) as (port, conns):
            probe = HealthProbe()
            for _ in range(3):
                assert (await probe.readyz("127.0.0.1", port, 1))[0] == 200
            probe.close()
        assert conns == [1, 1, 1]

    async def test_a_503_with_its_body_is_an_answer(self) -> None:
        body = b'{"state":"draining","worker":"w-9"}'
        reply = ok(body).replace(b"200 OK", b"503 Service Unavailable")
        async with stand_in(lambda head: reply) as (port, _):
            probe = HealthProbe()
            status, answer = await probe.readyz("127.0.0.1", port, 1)
            probe.close()
        assert (status, answer["state"]) == (503, "draining")

    async def test_nothing_listening_is_a_probe_error(self) -> None:
        with pytest.raises(ProbeError, match=r"Connect|refused"):
            await HealthProbe().readyz("127.0.0.1", free_port(), 1)

    async def test_no_answer_times_out_and_the_next_round_starts_afresh(self) -> None:
        answers = iter([None, ok()])
        async with stand_in(lambda head: next(answers)) as (port, connections):
            probe = HealthProbe()
            with pytest.raises(ProbeError, match="TimeoutError"):
                await probe.readyz("127.0.0.1", port, 0.2)
            assert (await probe.readyz("127.0.0.1", port, 1))[0] == 200
            probe.close()
        assert connections == [1, 1]

    @pytest.mark.parametrize(
        "reply",
        [b"not http at all\r\n\r\n", ok(b"<html>"), ok(b"[1, 2]")],
        ids=["not-http", "not-json", "not-an-object"],
    )
    async def test_an_answer_that_is_not_a_readiness_body_is_a_probe_error(
        self, reply: bytes
    ) -> None:
        async with stand_in(lambda head: reply) as (port, _):
            with pytest.raises(ProbeError):
                await HealthProbe().readyz("127.0.0.1", port, 1)

    async def test_a_real_worker_answers_ready_with_its_name(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 1) as p:
            probe = HealthProbe()
            status, body = await probe.readyz("127.0.0.1", p.workers["w-0"].port, 2)
            status_again, _ = await probe.readyz("127.0.0.1", p.workers["w-0"].port, 2)
            probe.close()
        assert (status, status_again, body["state"], body["worker"]) == (200, 200, "ready", "w-0")
