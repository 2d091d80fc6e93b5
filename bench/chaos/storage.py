"""The storage host: SeaweedFS (``tests/s3server.S3Server``), restarted on its own data directory.

The data directory is ``RUN_DIR/storage``, so a restart finds every object again (what a real
S3 does after an outage) and the checker reads what the run left. The ports are chosen free in
the root namespace even when SeaweedFS runs in the storage namespace: it keeps Unix sockets
named after its ports in the shared ``/tmp``, which two runs must not share.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.s3server import S3Server

BUCKET = "chaos"
_GRPC_OFFSET = 10_000


class Storage:
    def __init__(self, address: str, exec_prefix: Sequence[str], run_dir: Path) -> None:
        self.address = address
        self.run_dir = run_dir
        self.server = S3Server(
            host=address,
            port=_free_port_pair(),
            access_key="chaos",
            secret_key="chaos-secret-key",
            data_dir=run_dir / "storage",
            exec_prefix=list(exec_prefix),
        )
        self.held = False

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def running(self) -> bool:
        return self.server.running

    def store_kwargs(self) -> dict[str, Any]:
        return self.server.store_kwargs(BUCKET)

    async def start(self) -> None:
        """Start and wait until S3 answers a signed request (S3Server's own bound)."""
        await self.server.astart()
        self.held = False

    async def stop(self) -> None:
        """SIGTERM, SIGKILL after S3Server's bound; the data directory stays."""
        self.held = True
        await self.server.astop()

    def close(self) -> None:
        """Stop for good and keep its log in the run directory (S3Server removes its own)."""
        log = self.server.log()
        self.server.cleanup()
        if log:
            (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
            (self.run_dir / "logs" / "storage.log").write_text(log)


def _free_port_pair() -> int:
    """A port p with p and p + 10000 free (SeaweedFS's gRPC port is its HTTP port + 10000),
    below the ephemeral range so no outgoing connection takes either first."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            low = int(ranges.read().split()[0])
    except (OSError, ValueError):
        low = 32768
    for _ in range(200):
        port = random.randrange(2000, low - _GRPC_OFFSET)
        if _bindable(port) and _bindable(port + _GRPC_OFFSET):
            return port
    raise RuntimeError(f"no free port pair (p, p + {_GRPC_OFFSET}) below {low}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True
