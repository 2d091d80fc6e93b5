"""moto's S3 app behind uvicorn, which keeps HTTP/1.1 connections alive as MinIO does.

``moto_server`` runs on werkzeug's development server, which answers every request with
``Connection: close``: a client then pays a new TCP connection per request, a cost a MinIO
deployment does not have. The benchmarks (``bench.run --s3 keepalive``) use this instead, so
the worker's CPU per PUT is not inflated by the emulator; the tests keep ``moto_server``.

    python -m tests.moto_keepalive --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

import argparse

import uvicorn
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from uvicorn.middleware.wsgi import WSGIMiddleware


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    app = WSGIMiddleware(DomainDispatcherApplication(create_backend_app), workers=4)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", ws="none", lifespan="off")


if __name__ == "__main__":
    main()
