"""The worker's process lifecycle: its HTTP app on uvicorn, its public port on our protocols.

uvicorn serves the Starlette app (health, metrics, admin, peer and HTTP API routes) and runs
its lifespan, on a private Unix socket (``contract.edge.private_socket``). The public port is a
``worker.listener.Listener``: WebSockets are served there directly, HTTP requests are relayed to
uvicorn. Start: the lifespan first (the session manager, the lease), then the public port.
Stop, after the drain that SIGTERM runs first (``contract.server.serve``): the public port
stops accepting, WebSockets still open get 1012, then uvicorn shuts down and runs the lifespan's
end (a drain of whatever is left, the lease given up).
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette

from contract.edge.private_socket import PrivateSocket
from contract.server import Server, uvicorn_config

from .endpoints.worker_state import WorkerState
from .listener import Listener
from .settings import Settings

BACKLOG = 2048  # as uvicorn's: a join storm of a few thousand clients waits in the kernel


class WorkerServer:
    """One worker's servers; ``serve`` runs until ``should_exit`` is set (``force_exit``: do
    not wait for connections to finish), like ``uvicorn.Server``."""

    def __init__(self, app: Starlette, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.http = Server(uvicorn_config(app))
        self.listener: Listener | None = None
        self.started = False
        self._exit = asyncio.Event()

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()

    @property
    def force_exit(self) -> bool:
        return self.http.force_exit

    @force_exit.setter
    def force_exit(self, value: bool) -> None:
        self.http.force_exit = value
        if value:
            self._exit.set()

    async def serve(self) -> None:
        private = PrivateSocket("collab-worker")
        http_socket = private.listen()
        http = asyncio.create_task(self.http.serve(sockets=[http_socket]))
        public: asyncio.Server | None = None
        try:
            while not self.http.started:  # the lifespan has run when uvicorn says so
                if http.done():
                    await http
                    raise RuntimeError("the worker's HTTP app stopped during start-up")
                await asyncio.sleep(0.01)
            state: WorkerState = self.app.state.worker
            self.listener = Listener(state, private)
            public = await asyncio.get_running_loop().create_server(
                self.listener.protocol_factory,
                self.settings.host,
                self.settings.port,
                backlog=BACKLOG,
            )
            self.listener.start()
            self.started = True
            await self._exit.wait()
        finally:
            if public is not None:
                public.close()
            if self.listener is not None:
                await self.listener.close(wait=not self.force_exit)
            self.http.should_exit = True
            try:
                await http
            finally:
                if self.listener is not None:
                    self.listener.abort()
                self.http.release_sockets()
                http_socket.close()
                private.remove()
