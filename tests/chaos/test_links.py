"""Loopback paths (bench/chaos/links.py): a cut holds bytes and refuses connections, a heal
delivers what was held, a delay delays only the sender's bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bench.chaos.links import Link, Shape
from bench.chaos.network import LoopbackNetwork
from tests.s3server import free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """A TCP echo server on loopback: the "listening host"."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def net(echo: int) -> AsyncIterator[LoopbackNetwork]:
    network = LoopbackNetwork({})
    network.links = {
        ("r0", "w0"): Link("r0", "w0", ("127.0.0.1", echo), free_port(), network.shape_of, 1)
    }
    await network.start()
    yield network
    await network.close()


async def connect(link: Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(*link.address), 2)


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    began = time.monotonic()
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    return time.monotonic() - began


class TestLoopbackLinks:
    async def test_a_cut_holds_bytes_and_the_heal_delivers_them(self, net: LoopbackNetwork) -> None:
        link = net.links[("r0", "w0")]
        reader, writer = await connect(link)
        await round_trip(reader, writer)
        await net.cut("f1", "r0", "w0", oneway=False)
        writer.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.5)
        await net.uncut("f1")
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
        writer.close()

    async def test_new_connections_are_refused_while_cut(self, net: LoopbackNetwork) -> None:
        link = net.links[("r0", "w0")]
        await net.cut("f1", "w0", "r0", oneway=True)
        with pytest.raises(OSError):
            await connect(link)
        await net.uncut("f1")
        reader, writer = await connect(link)
        await round_trip(reader, writer)
        writer.close()
        await writer.wait_closed()

    async def test_a_oneway_cut_holds_only_that_direction(self, net: LoopbackNetwork) -> None:
        link = net.links[("r0", "w0")]
        reader, writer = await connect(link)
        # w0 -> r0 held: the request reaches the echo server, its answer does not come back.
        await net.cut("f1", "w0", "r0", oneway=True)
        writer.write(b"ping")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.5)
        await net.uncut("f1")
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"ping"
        writer.close()

    async def test_a_delay_slows_the_round_trip_and_heals(self, net: LoopbackNetwork) -> None:
        link = net.links[("r0", "w0")]
        reader, writer = await connect(link)
        assert await round_trip(reader, writer) < 0.1
        await net.delay("w0", 0.2, 0.0)  # w0's sends: the echo's answers
        assert 0.2 <= await round_trip(reader, writer) < 0.5
        await net.undelay("w0")
        assert await round_trip(reader, writer) < 0.1
        writer.close()

    async def test_loss_stalls_some_chunks_as_retransmissions_would(
        self, net: LoopbackNetwork
    ) -> None:
        link = net.links[("r0", "w0")]
        reader, writer = await connect(link)
        await net.lose("r0", 0.5)
        times = [await round_trip(reader, writer) for _ in range(20)]
        assert any(t >= 0.2 for t in times) and any(t < 0.1 for t in times)
        await net.heal_all()
        assert net.shapes["r0"] == Shape()
        writer.close()
