"""The router benchmark's pure parts: nginx config, message and CPU arithmetic, placement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import nginx
from bench.loadgen import Plan
from bench.router import (
    added,
    cpu_per_1k,
    hot_spots,
    placement,
    ratio,
    relayed_messages,
    summarize,
)
from bench.run import SHAPES
from bench.wire import Framing
from router.ring import owner


class TestNginxConfig:
    def test_one_worker_hashing_websocket_proxy_with_every_path_inside_its_directory(
        self, tmp_path: Path
    ) -> None:
        text = nginx.config(8090, [("127.0.0.1", 8081), ("127.0.0.1", 8082)], tmp_path, False)
        assert "worker_processes 1;" in text
        assert "hash $request_uri consistent;" in text
        assert "server 127.0.0.1:8081;" in text and "server 127.0.0.1:8082;" in text
        assert "listen 127.0.0.1:8090;" in text
        for line in (
            "proxy_http_version 1.1;",
            "proxy_set_header Upgrade $http_upgrade;",
            'proxy_set_header Connection "upgrade";',
            "proxy_read_timeout 1h;",
            "proxy_buffering off;",
        ):
            assert line in text
        words = [line.split() for line in text.splitlines() if line.strip()]
        paths = [w[1].rstrip(";") for w in words if w[0] in ("pid", "error_log") or "_temp" in w[0]]
        assert len(paths) == 7 and all(p.startswith(str(tmp_path)) for p in paths)
        assert "user " not in text
        assert nginx.config(1, [("127.0.0.1", 2)], tmp_path, True).startswith("user root;")

    def test_foreground_command_and_loopback_only(self, tmp_path: Path) -> None:
        assert nginx.command(tmp_path) == [
            "nginx", "-p", str(tmp_path), "-c", "nginx.conf",
            "-e", str(tmp_path / "error.log"), "-g", "daemon off;",
        ]  # fmt: skip
        with pytest.raises(ValueError, match="loopback"):
            nginx.config(8090, [("10.0.0.1", 8081)], tmp_path, False)


class TestArithmetic:
    def test_relayed_messages_are_sent_plus_received(self) -> None:
        # fan-out: 500 updates sent, each received by 50 clients (49 readers + the echo)
        row = {"messages_sent": 500, "messages_received": 25_000}
        assert relayed_messages(row) == 25_500
        assert cpu_per_1k(1.275, 25_500) == pytest.approx(0.05)
        assert cpu_per_1k(1.0, 0) is None

    def test_added_latency_and_ratios(self) -> None:
        assert added(3.5, 2.0) == pytest.approx(1.5)
        assert added(None, 2.0) is None
        assert ratio(0.9, 0.6) == pytest.approx(1.5)
        assert ratio(0.9, -0.1) is None  # nothing added by the reference: no ratio
        assert ratio(-0.2, 0.5) is None

    def test_summary_takes_medians_and_judges_the_targets(self) -> None:
        def row(target: str, round_: int, **figures: float) -> dict[str, Any]:
            return {"shape": "rooms", "target": target, "round": round_, **figures}

        rows = [
            row("router", 0, added_p99_ms=2.0, proxy_cpu_s_per_1k=0.09),
            row("router", 1, added_p99_ms=4.0, proxy_cpu_s_per_1k=0.12),
            row("router", 2, added_p99_ms=3.0, proxy_cpu_s_per_1k=0.10),
            row("nginx", 0, added_p99_ms=1.0, proxy_cpu_s_per_1k=0.02),
            row("nginx", 1, added_p99_ms=2.0, proxy_cpu_s_per_1k=0.03),
            {"shape": "rooms", "target": "nginx", "round": 2, "error": "did not start"},
        ]
        verdict = summarize(rows, [SHAPES["rooms"]], ["router", "nginx"])["rooms"]
        assert verdict["targets"]["router"]["added_p99_ms"] == 3.0
        assert verdict["targets"]["nginx"]["added_p99_ms"] == 1.5
        assert verdict["router_vs_nginx"]["added_p99"] == pytest.approx(2.0)
        assert verdict["router_vs_nginx"]["added_p99_met"] is False
        assert verdict["router_vs_nginx"]["cpu_per_message"] == pytest.approx(0.10 / 0.025)
        assert verdict["router_vs_nginx"]["cpu_per_message_met"] is False


class TestDirectPlacement:
    def test_clients_go_to_the_worker_the_router_would_pick(self) -> None:
        urls = {"w-0": "ws://127.0.0.1:1/yjs", "w-1": "ws://127.0.0.1:2/yjs"}
        plan = Plan(
            url="ws://127.0.0.1:9/yjs",
            framing=Framing.YWS,
            rooms=40,
            clients=2,
            writers=1,
            rate=5,
            duration=1,
            prefix="p",
            routes=tuple(urls.items()),
        )
        counts = placement("p", 40)
        assert sum(counts.values()) == 40 and min(counts.values()) > 0
        for room in range(40):
            document = plan.document(room)
            chosen = owner(f"p-{room}", urls)
            assert chosen is not None
            assert plan.url_for(document) == f"{urls[chosen]}/{document}"
        no_routes = Plan("ws://127.0.0.1:9/yjs", Framing.YWS, 1, 2, 1, 5, 1, prefix="p")
        assert no_routes.url_for("p-0/bench.txt") == "ws://127.0.0.1:9/yjs/p-0/bench.txt"


def test_profile_hot_spots_leave_out_the_loop_wait_and_its_trunk() -> None:
    collapsed = "\n".join(
        [
            "main (m.py:1);run (loop.c:1);epoll_pwait (libc.so.6) 60",
            "main (m.py:1);run (loop.c:1);data_received (r.py:4);write (libc.so.6) 30",
            "main (m.py:1);run (loop.c:1);data_received (r.py:4);feed (f.py:9) 6",
            "main (m.py:1);run (loop.c:1);check (h.py:2);get (httpx.py:7) 4",
        ]
    )
    spots = hot_spots(collapsed)
    assert (spots["samples"], spots["busy"]) == (100, 40)
    assert spots["self"][0] == ("write (libc.so.6)", 0.75)
    assert dict(spots["inclusive"]) == {
        "data_received (r.py:4)": 0.9,
        "feed (f.py:9)": 0.15,
        "check (h.py:2)": 0.1,
        "get (httpx.py:7)": 0.1,
    }
