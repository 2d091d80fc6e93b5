"""A real S3 server for tests: moto's standalone server as a child process on a free port.

Reusable from any test directory::

    from tests.s3server import start_s3_server

    @pytest.fixture(scope="session")
    def s3() -> Iterator[S3Server]:
        with start_s3_server() as server:
            yield server

    store = MinioStore(**s3.store_kwargs(bucket="my-bucket"))     # or open_store(**...)

For "storage goes down, then comes back" tests, ``server.stop()`` kills the process and
``server.start()`` starts a new one on the *same* port (``astop``/``astart`` do the same without
blocking the event loop).  moto keeps everything in memory, so a restarted server is empty:
no buckets, no objects.  ``MinioStore`` re-creates its bucket on the next request, which is
what a test of "the worker keeps its unflushed updates and writes them once storage is back"
needs; do not expect objects written before the restart to survive it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

__all__ = ["BACKENDS", "S3Server", "free_port", "minio_test_kwargs", "start_s3_server"]

# Every storage backend tests can run on here: the embedded store, the moto S3 server process,
# and a real MinIO when MINIO_TEST_ENDPOINT (+ MINIO_TEST_* keys) is set.
BACKENDS = [
    pytest.param("local"),
    pytest.param("s3", marks=pytest.mark.s3),
    *(
        [pytest.param("minio", marks=pytest.mark.s3)]
        if os.environ.get("MINIO_TEST_ENDPOINT")
        else []
    ),
]


def minio_test_kwargs(bucket: str) -> dict[str, Any]:
    """``MinioStore``/``open_store`` arguments for the real MinIO named by MINIO_TEST_*."""
    return {
        "endpoint": os.environ["MINIO_TEST_ENDPOINT"],
        "port": int(os.environ.get("MINIO_TEST_PORT", "9000")),
        "bucket": f"{os.environ.get('MINIO_TEST_BUCKET', 'collab-test')}-{bucket}"[:63],
        "access_key": os.environ.get("MINIO_TEST_ACCESS_KEY", ""),
        "secret_key": os.environ.get("MINIO_TEST_SECRET_KEY", ""),
        "secure": os.environ.get("MINIO_TEST_SECURE", "false").lower() in ("1", "true", "yes"),
    }


_START_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the usual bind-to-0 trick; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """Connection parameters of a moto server, and control over its process."""

    host: str
    port: int
    access_key: str = "testing"
    secret_key: str = "testing"
    secure: bool = False
    keep_alive: bool = False
    """moto's app behind uvicorn (connections kept alive, as MinIO does) instead of moto_server,
    whose werkzeug server closes every connection (tests/moto_keepalive.py)."""
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_path: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def store_kwargs(self, bucket: str) -> dict[str, Any]:
        """Keyword arguments for ``MinioStore(...)`` and ``open_store(...)``."""
        return {
            "endpoint": self.host,
            "port": self.port,
            "bucket": bucket,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "secure": self.secure,
        }

    def start(self) -> None:
        """Start moto on ``self.port`` (again) and return once it answers HTTP."""
        if self.running:
            return
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="moto-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        if self.keep_alive:
            argv = [sys.executable, "-m", "tests.moto_keepalive", "--host", self.host]
        else:
            argv = [_moto_server(), "-H", self.host]
        argv += ["--port", str(self.port)]
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                argv,
                cwd=Path(__file__).resolve().parent.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start on {self.url}:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server process and wait for it; the port is free again afterwards."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def astart(self) -> None:
        await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def log(self) -> str:
        """The server's output so far, for failure messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")[-4000:]

    def cleanup(self) -> None:
        self.stop()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None


@contextmanager
def start_s3_server(
    port: int | None = None, host: str = "127.0.0.1", *, keep_alive: bool = False
) -> Iterator[S3Server]:
    """A running moto server for the duration of the block; killed (and waited for) after."""
    server = S3Server(host=host, port=port or free_port(host), keep_alive=keep_alive)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def _moto_server() -> str:
    # Prefer the script next to this interpreter, so the venv's moto is used without activation.
    candidate = Path(sys.executable).with_name("moto_server")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("moto_server")
    if found is None:
        raise RuntimeError(
            "moto_server not found; install the test extras: pip install -e '.[test]'"
        )
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=1) as response:
            response.read()
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False
