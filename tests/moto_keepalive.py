"""moto's S3 app behind uvicorn, which keeps HTTP/1.1 connections alive as MinIO does.

Kept only for ``bench.run --s3 moto``: the earlier figures in docs/benchmarks.md were measured
on this emulator, and this reproduces them. Tests and benchmarks otherwise run on SeaweedFS
(tests/s3server.py), a real object store; moto is not among the test extras any more
(``pip install 'moto[server]'`` for this).

    python -m tests.moto_keepalive --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.s3server import free_port


@contextmanager
def start_moto_server(host: str = "127.0.0.1") -> Iterator[dict[str, Any]]:
    """This module as a process on a free port for the block; yields ``store_kwargs``-like
    arguments (bucket "unused"), as ``S3Server.store_kwargs`` would."""
    if importlib.util.find_spec("moto") is None:
        raise RuntimeError("--s3 moto needs moto: pip install 'moto[server]'")
    port = free_port(host)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.moto_keepalive", "--host", host, "--port", str(port)],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"http://{host}:{port}/"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start on {host}:{port}")
            time.sleep(0.05)
        yield {
            "endpoint": host,
            "port": port,
            "bucket": "unused",
            "access_key": "testing",
            "secret_key": "testing",
            "secure": False,
        }
    finally:
        process.terminate()
        process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            response.read()
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is up
    except OSError:
        return False


def main() -> None:
    # Imported here: importing this module (for start_moto_server) must not need moto.
    import uvicorn
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from uvicorn.middleware.wsgi import WSGIMiddleware

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    app = WSGIMiddleware(DomainDispatcherApplication(create_backend_app), workers=4)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", ws="none", lifespan="off")


if __name__ == "__main__":
    main()
