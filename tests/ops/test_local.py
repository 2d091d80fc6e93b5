"""`collab health` (the image's HEALTHCHECK) and `collab self-drain` (the worker's preStop hook)
against real worker and router processes on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import websockets

from tests.cli import collab
from tests.faults import s3_behind_proxy
from tests.pool import TOKEN, pool, sessions_owned_by
from tests.s3server import free_port, start_s3_server
from tests.support import JsonClient


class TestHealth:
    async def test_healthy_worker_and_router_and_a_closed_port(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 1) as p:
            worker = p.workers["w-0"]
            for port in (worker.port, p.router.port):
                done = await collab("health", env={"PORT": str(port)})
                assert done.returncode == 0, done.stderr
                assert done.stdout.strip() == f"healthy: http://127.0.0.1:{port}/healthz"
            ready = await collab("health", "--ready", "--port", str(worker.port))
            assert ready.returncode == 0, ready.stderr
            closed = free_port()
            down = await collab("health", env={"PORT": str(closed)})
            assert down.returncode == 1
            assert f"unhealthy: http://127.0.0.1:{closed}/healthz ConnectError" in down.stderr

    async def test_a_draining_worker_is_alive_but_not_ready(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 1) as p:
            worker = p.workers["w-0"]
            await p.admin("POST", "/admin/workers/w-0/drain")
            alive = await collab("health", "--port", str(worker.port))
            assert alive.returncode == 0, alive.stderr
            ready = await collab("health", "--ready", "--port", str(worker.port))
            assert ready.returncode == 1
            assert "/readyz HTTP 503" in ready.stderr

    async def test_a_bad_port_is_a_usage_error(self) -> None:
        done = await collab("health", env={"PORT": "eighty"})
        assert done.returncode == 2
        assert "PORT must be a port number, got 'eighty'" in done.stderr


class TestSelfDrain:
    async def test_moves_live_sessions_away_before_sigterm_and_loses_nothing(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 2) as p:
            session = sessions_owned_by("w-0", ["w-0", "w-1"], 1, "prestop")[0]
            worker = p.workers["w-0"]
            async with JsonClient.connect(p.url) as j:
                assert (await j.join(session, "alice"))["containerId"] == "w-0"
                await j.file_op(type="create", path="a.txt", content="acknowledged before stop")
                done = await collab(
                    "self-drain",
                    "--timeout",
                    "20",
                    env={"PORT": str(worker.port), "ADMIN_TOKEN": f"{TOKEN},older-token"},
                )
                assert done.returncode == 0, done.stderr
                assert done.stdout.startswith("drained w-0 in ")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await j.recv(timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            async with httpx.AsyncClient() as http:
                status = (
                    await http.get(
                        f"{worker.http}/admin/status",
                        headers={"authorization": f"Bearer {TOKEN}"},
                    )
                ).json()
                assert status["sessions"] == 0 and status["state"] == "draining"
                assert (await http.get(f"{worker.http}/readyz")).status_code == 503
            await p.wait_ring({"w-1"})
            async with JsonClient.connect(p.url) as j2:
                assert (await j2.join(session, "bob"))["containerId"] == "w-1"
                assert await j2.get_file("a.txt") == "acknowledged before stop"

    async def test_refusals_name_their_cause(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 1) as p:
            port = str(p.workers["w-0"].port)
            wrong = await collab("self-drain", env={"PORT": port, "ADMIN_TOKEN": "not-it"})
            assert wrong.returncode == 1
            assert f"worker at http://127.0.0.1:{port} refused the token" in wrong.stderr
            unset = await collab("self-drain", env={"PORT": port, "ADMIN_TOKEN": ""})
            assert unset.returncode == 2
            assert "ADMIN_TOKEN (or ADMIN_TOKEN_FILE) is not set here" in unset.stderr
            assert p.router.membership.find("w-0").state == "active"  # nothing was drained
        nobody = await collab("self-drain", "--port", str(free_port()), env={"ADMIN_TOKEN": "t"})
        assert nobody.returncode == 0, nobody.stderr
        assert "nothing to drain" in nobody.stdout

    async def test_token_from_a_secret_file(self, tmp_path: Path) -> None:
        secret = tmp_path / "admin_token"
        secret.write_text(TOKEN + "\n")
        async with pool(tmp_path, 1) as p:
            port = str(p.workers["w-0"].port)
            done = await collab(
                "self-drain", env={"PORT": port, "ADMIN_TOKEN": "", "ADMIN_TOKEN_FILE": str(secret)}
            )
            assert done.returncode == 0, done.stderr

    @pytest.mark.s3
    async def test_gives_up_at_the_timeout_naming_what_is_left(self, tmp_path: Path) -> None:
        # Storage is cut with a proxy (the S3 server runs on, with what it stored): what was
        # acknowledged before the cut is stored and must stay so.
        with start_s3_server() as s3:
            async with s3_behind_proxy(s3.store_kwargs("prestop-timeout")) as (env, cut):
                async with pool(tmp_path, 1, env) as p, JsonClient.connect(p.url) as j:
                    await j.join("stuck", "alice")
                    await j.file_op(type="create", path="a.txt", content="stored")
                    await cut.cut("refuse")
                    # Made while storage is down: held in memory, not acknowledged (it cannot be).
                    await j.send_op(type="update", path="a.txt", content="in memory only")
                    port = str(p.workers["w-0"].port)
                    done = await collab(
                        "self-drain", "--timeout", "2", env={"PORT": port, "ADMIN_TOKEN": TOKEN}
                    )
                    assert done.returncode == 1
                    assert "w-0 still holds 1 session(s) after 2 s: stuck" in done.stderr
                    await cut.heal()
