"""Membership: static or DNS lists, health rounds, and what the ring is made of."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import httpx
import pytest

from contract.env import ConfigError
from router.membership import Membership
from router.metrics import RouterMetrics
from router.server import run_router
from router.settings import RouterSettings
from tests.pool import TOKEN, pool
from tests.s3server import free_port
from tests.support import JsonClient


class TestSettings:
    def test_workers_or_a_dns_name_are_required(self) -> None:
        with pytest.raises(ConfigError, match="WORKERS"):
            RouterSettings.from_env({})

    @pytest.mark.parametrize("value", ["nohost", "h:port", ":8081", "h:70000"])
    def test_a_bad_worker_entry_names_the_variable(self, value: str) -> None:
        with pytest.raises(ConfigError, match="WORKERS entries must be host:port"):
            RouterSettings.from_env({"WORKERS": f"127.0.0.1:1,{value}"})

    def test_static_and_dns_forms_parse(self) -> None:
        s = RouterSettings.from_env({"WORKERS": "a:1, [::1]:2", "PORT": "9000"})
        assert s.workers == (("a", 1), ("::1", 2)) and s.port == 9000
        d = RouterSettings.from_env({"WORKERS_DNS": "tasks.worker", "WORKERS_PORT": "9001"})
        assert (d.workers_dns, d.workers_port) == ("tasks.worker", 9001)


class TestHealth:
    async def test_draining_and_dead_workers_leave_the_ring_and_come_back(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 2) as p, httpx.AsyncClient() as http:
            w1 = p.workers["w-1"]
            # Drained on the worker itself (as SIGTERM or an operator would): the next health
            # round sees readiness 503 "draining".
            auth = {"authorization": f"Bearer {TOKEN}"}
            await http.post(f"{w1.http}/admin/drain", headers=auth)
            await p.wait_ring({"w-0"})
            drained = p.router.membership.find("w-1")
            assert drained is not None and drained.state == "draining"
            assert p.metric("collab_router_workers", state="draining") == 1
            await http.post(f"{w1.http}/admin/undrain", headers=auth)
            await p.wait_ring({"w-0", "w-1"})
            # Killed: down at the next round; restarted on the same address: back in.
            w1.kill()
            await p.wait_ring({"w-0"})
            info = p.router.membership.find("w-1")
            assert info is not None and info.state == "down" and info.error
            await w1.start()
            await p.wait_ring({"w-0", "w-1"})

    async def test_a_router_without_ready_workers_says_so(self, tmp_path: Path) -> None:
        settings = RouterSettings(
            host="127.0.0.1",
            port=free_port(),
            workers=(("127.0.0.1", free_port()),),
            health_interval_ms=100,
        )
        async with anyio.create_task_group() as tg, httpx.AsyncClient() as http:
            router = await tg.start(run_router, settings)
            ready = await http.get(f"http://127.0.0.1:{router.port}/readyz")
            assert ready.status_code == 503 and ready.json()["state"] == "no workers"
            async with JsonClient.connect(f"ws://127.0.0.1:{router.port}") as j:
                await j.send({"type": "join", "sessionId": "s", "userId": "u"})
                error = await j.recv("error")
                assert "no worker is ready (known: 1 down)" in error["reason"]
            tg.cancel_scope.cancel()


class TestDns:
    async def test_a_dns_name_is_resolved_with_the_system_resolver(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 1) as p:
            port = p.workers["w-0"].port
            settings = RouterSettings(
                host="127.0.0.1", port=free_port(), workers_dns="localhost", workers_port=port
            )
            membership = Membership(settings, RouterMetrics())
            await membership.refresh()
            membership.probe.close()
            # localhost may also resolve to ::1, where nothing listens: that one is down.
            assert ("127.0.0.1", port) in membership.workers
            assert list(membership.ring) == ["w-0"]

    async def test_addresses_that_appear_and_vanish_join_and_leave(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2) as p:
            gone = p.addresses.pop()
            await p.wait_ring({"w-0"})
            assert ("127.0.0.1", gone[1]) not in p.router.membership.workers
            p.addresses.append(gone)
            await p.wait_ring({"w-0", "w-1"})

    async def test_a_dns_failure_keeps_the_last_known_workers(self, tmp_path: Path) -> None:
        calls = 0

        async def flaky(name: str, port: int) -> list[tuple[str, int]]:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise OSError("Temporary failure in name resolution")
            return [("127.0.0.1", p.workers["w-0"].port)]

        async with pool(tmp_path, 1) as p:
            settings = RouterSettings(host="127.0.0.1", port=free_port(), workers_dns="x")
            membership = Membership(settings, RouterMetrics(), resolve=flaky)
            await membership.refresh()
            await membership.refresh()
            membership.probe.close()
            assert calls == 2 and list(membership.ring) == ["w-0"]


async def test_the_router_survives_a_storm_of_connections_to_a_dead_worker(
    tmp_path: Path,
) -> None:
    async with pool(tmp_path, 1, health_interval_ms=60_000) as p:
        p.workers["w-0"].kill()

        async def one() -> None:
            async with JsonClient.connect(p.url) as j:
                await j.send({"type": "join", "sessionId": "s", "userId": "u"})
                await j.recv("error")

        await asyncio.gather(*(one() for _ in range(50)))
        assert p.metric("collab_router_upstream_errors_total") >= 1
        async with httpx.AsyncClient() as http:
            assert (await http.get(p.http + "/healthz")).status_code == 200
