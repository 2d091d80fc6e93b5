"""Route each client connection to its session's owner, then relay bytes.

The session id comes from the path (``/yjs/{sessionId}/...``) or, on the JSON protocol, from the
first ``join`` message: the router completes that handshake itself, answers what comes before the
join exactly as a worker would (``ping``, errors), and passes the join's frame to the worker
unchanged. Requests that are not WebSocket upgrades (health, metrics, admin) are relayed to the
router's own HTTP app. Errors seen by a client here are close frames with a reason; the router
never lets one connection's failure escape into the rest.

Authentication (``AUTH_SECRET``, see ``contract.auth``): the token in the head is checked before a
worker is chosen, the session against it on the Yjs path at once and on the JSON path at the
join, so a refused client never reaches a worker. The head goes to the worker unchanged (token
included), and the worker checks again.

Hand-off: when the ring changes, every live session whose owner changed is handed off. The old
owner is asked to flush the session and send its clients away (1012), so the new owner loads
everything; new connections for that session wait until then. Clients still connected to the
old owner afterwards (it is down, or did not answer) are closed here with 1012.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote, unquote

import httpx
import structlog

from contract import close_codes as codes
from contract import json_protocol as jmsg
from contract.admin_token import sending_token
from contract.auth import Authenticator, AuthRefused, Grant
from contract.edge.greeter import Greeter
from contract.edge.heads import HeadError, http_answer
from contract.edge.http_relay import HttpRelay
from contract.routing import MISDIRECTED, ROUTER_HEADER, SESSION_HEADER, OwnerHint

from . import frames, handshake, ring
from .frames import FrameCursor
from .handshake import Answer, HandshakeError, Upgrade
from .membership import Membership, WorkerInfo, describe_error
from .metrics import RouterMetrics
from .relay import Relay, Side
from .settings import RouterSettings

log = structlog.get_logger("router.proxy")

# A worker answers the upgrade once it has claimed and loaded the session, which may wait for an
# unreachable previous owner's lease to run out (worker/ownership.py): longer than a client's.
UPSTREAM_HEAD_TIMEOUT_S = 30.0


class Refused(Exception):
    """A client connection that cannot be routed; ``code``/``reason`` go into its close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _refused_by(worker: WorkerInfo, response: Answer) -> Refused:
    return Refused(
        codes.TRY_AGAIN,
        f"worker {worker.name} refused the connection (HTTP {response.status}); reconnect",
    )


class Proxy:
    def __init__(
        self,
        settings: RouterSettings,
        metrics: RouterMetrics,
        membership: Membership,
        http: HttpRelay | None = None,
    ) -> None:
        """``http``: where plain HTTP requests to the public port go (the router's own app)."""
        self.settings = settings
        self.metrics = metrics
        self.membership = membership
        self.auth = Authenticator(settings.auth_secret)
        self.http_relay = http
        self.live: dict[str, set[Relay]] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._handoffs: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.accepting = True

    # --- lifecycle -------------------------------------------------------------------------

    def protocol_factory(self) -> Greeter:
        return Greeter(self)

    def websocket(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        """An upgrade, greeted (``contract.edge``): routed by a task of its own."""
        client = Side.adopt(transport, head + rest)
        self._spawn(self._handle(client, head), "route")

    def plain_http(self, transport: asyncio.Transport, data: bytes) -> None:
        """Plain HTTP: relayed as bytes to the router's own HTTP app."""
        if self.http_relay is None:
            transport.write(http_answer(404, "no HTTP endpoints here"))
            transport.close()
            return
        self.http_relay.relay(transport, data)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, reason: str = "router stopping; reconnect") -> None:
        """Sends every client away with 1012 and stops all pending work."""
        self.accepting = False
        for relays in list(self.live.values()):
            for relay in list(relays):
                relay.close(codes.RESTART, reason)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        if self._http is not None:
            await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False)
        return self._http

    @property
    def connections(self) -> int:
        return sum(len(r) for r in self.live.values())

    # --- routing ---------------------------------------------------------------------------

    async def _handle(self, client: Side, head: bytes) -> None:
        try:
            try:
                upgrade = handshake.read_upgrade(head)
            except HeadError as exc:
                label = "bad_handshake" if isinstance(exc, HandshakeError) else "bad_request"
                self.metrics.client_errors.labels(label).inc()
                client.write(http_answer(exc.status, str(exc)))
                client.close()
                return
            path = upgrade.path
            if path.startswith("/yjs/"):
                session = unquote(path[5:]).partition("/")[0]
                try:
                    grant = self._authenticate(upgrade)
                    if grant is not None:
                        grant.check_session(session)
                except AuthRefused as exc:
                    self._auth_refused(client, exc)
                    self._refuse_handshake(client, upgrade, Refused(exc.code, exc.reason))
                    return
                await self._route_yjs(client, upgrade, session)
            elif path in ("/", "/ws"):
                await self._route_json(client, upgrade)
            else:
                self._refuse_handshake(client, upgrade, Refused(codes.POLICY, "unknown path"))
        except asyncio.CancelledError:
            client.abort()
            raise
        except ConnectionError:
            client.close()
        except Exception:
            # A bug must cost one connection, never the router.
            self.metrics.client_errors.labels("internal").inc()
            log.exception("route_failed")
            client.abort()

    async def _read_answer(self, side: Side) -> Answer | None:
        """The worker's answer at the start of ``side.buffer``; None if it left or took too
        long. A malformed answer raises HeadError; nothing is written to the worker (the
        failure is ours to report to the client)."""
        deadline = time.monotonic() + UPSTREAM_HEAD_TIMEOUT_S
        while (answer := handshake.read_answer(side.buffer)) is None:
            try:
                await side.wait_data(deadline - time.monotonic())
            except (TimeoutError, ConnectionError):
                side.close()
                return None
        return answer

    def _authenticate(self, upgrade: Upgrade) -> Grant | None:
        return self.auth.authenticate(upgrade.query, upgrade.subprotocols)

    def _auth_refused(self, client: Side, exc: AuthRefused) -> None:
        # The reason names the cause (never the token itself), as the client is told.
        self.metrics.client_errors.labels(exc.label).inc()
        log.info("client_refused", code=exc.code, reason=exc.reason, peer=client.peer_ip)

    def _refuse_handshake(self, client: Side, upgrade: Upgrade, refused: Refused) -> None:
        """Completes the client's handshake only to close it with a code and a reason.

        ``client.buffer`` still starts with the upgrade's head; the client's frames follow it.
        """
        subprotocol = self.auth.subprotocol(upgrade.subprotocols)
        client.write(handshake.switching_protocols(upgrade.key, subprotocol))
        client.write(frames.close_frame(refused.code, refused.reason))
        del client.buffer[: upgrade.size]
        client.linger()

    async def _owner(self, session: str) -> WorkerInfo:
        gate = self._gates.get(session)
        if gate is not None:
            try:
                await asyncio.wait_for(gate.wait(), self.settings.handoff_timeout_ms / 1000)
            except TimeoutError:
                pass
        if not self.accepting:
            raise Refused(codes.RESTART, "router stopping; reconnect")
        owner = self.membership.owner(session)
        if owner is None:
            counts = self.membership.summary()
            known = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"
            raise Refused(codes.TRY_AGAIN, f"no worker is ready (known: {known}); retry shortly")
        return owner

    async def _connect(self, worker: WorkerInfo) -> Side:
        loop = asyncio.get_running_loop()
        try:
            _, side = await asyncio.wait_for(
                loop.create_connection(Side, worker.host, worker.port),
                self.settings.connect_timeout_ms / 1000,
            )
        except (OSError, TimeoutError) as exc:
            error = describe_error(exc)
            self._upstream_failed(worker, error)
            if isinstance(exc, ConnectionRefusedError) and self.membership.knows(worker):
                # Nothing listens there: take it off the ring now, so the client's reconnect
                # reaches the next owner without waiting for the next health round.
                self.membership.mark_down(worker, error)
            raise Refused(
                codes.TRY_AGAIN,
                f"worker {worker.name} at {worker.address} unreachable; reconnect",
            ) from None
        return side

    def _upstream_failed(self, worker: WorkerInfo, error: str) -> None:
        self.metrics.upstream_errors.inc()
        log.error("upstream_failed", worker=worker.name, address=worker.address, error=error)

    async def _upstream_head(self, upstream: Side, worker: WorkerInfo) -> Answer:
        """The worker's answer to the upgrade sent to it; Refused (1013) if there is none."""
        try:
            head = await self._read_answer(upstream)
            error = "no handshake response"
        except HeadError as exc:
            head, error = None, f"malformed handshake response: {exc}"
        if head is None:
            upstream.close()
            self._upstream_failed(worker, error)
            raise Refused(codes.TRY_AGAIN, f"worker {worker.name} did not answer; reconnect")
        return head

    def _check_switch(self, upstream: Side, worker: WorkerInfo, head: Answer, accept: str) -> None:
        """A 101 checked as a client must (RFC 6455 §4.1); anything else is an upstream
        failure and Refused with 1013."""
        if head.status != 101:
            upstream.close()
            self._upstream_failed(worker, f"handshake answered {head.first_line!r}")
            raise _refused_by(worker, head)
        try:
            handshake.check_upgrade_response(head, accept)
        except HandshakeError as exc:
            upstream.close()
            self._upstream_failed(worker, str(exc))
            raise Refused(
                codes.TRY_AGAIN, f"worker {worker.name} answered an invalid handshake; reconnect"
            ) from None

    async def _open_upstream(
        self, session: str, request_for: Callable[[WorkerInfo], tuple[bytes, str]]
    ) -> tuple[Side, Answer, WorkerInfo, WorkerInfo]:
        """Connects to the session's owner: (the worker's side, its 101, the worker, the ring's
        proposal).

        The ring only proposes. A worker that does not own the session answers 421 naming the
        live owner (contract/routing.py, worker/ownership.py), and the request goes there
        instead, once; this router's membership says how to reach that worker when it knows
        it, else the address the owner advertises.
        """
        proposed = worker = await self._owner(session)
        for hop in (1, 2):
            upstream = await self._connect(worker)
            request, accept = request_for(worker)
            upstream.write(request)
            head = await self._upstream_head(upstream, worker)
            if head.status == MISDIRECTED and hop == 1:
                upstream.close()
                hint = OwnerHint.from_headers(head.header)
                if hint is None:
                    self._upstream_failed(worker, "421 without a valid owner")
                    raise _refused_by(worker, head)
                self.metrics.redirects.inc()
                known = self.membership.find(hint.worker)
                worker = known if known is not None else WorkerInfo(*hint.host_port, id=hint.worker)
                log.info(
                    "redirected",
                    session=session,
                    proposed=proposed.name,
                    owner=hint.worker,
                    epoch=hint.epoch,
                )
                continue
            self._check_switch(upstream, worker, head, accept)
            return upstream, head, worker, proposed
        raise Refused(codes.TRY_AGAIN, "the session's owner moved again; reconnect")

    async def _route_yjs(self, client: Side, upgrade: Upgrade, session: str) -> None:
        request = upgrade.forwarded(
            bytes(client.buffer[: upgrade.size]),
            (("X-Forwarded-For", client.peer_ip), (ROUTER_HEADER, self.settings.router_id)),
        )
        accept = handshake.accept_key(upgrade.key)
        try:
            upstream, response, worker, proposed = await self._open_upstream(
                session, lambda _: (request, accept)
            )
        except Refused as refused:
            self._refuse_handshake(client, upgrade, refused)
            return
        del client.buffer[: upgrade.size]  # sent; what the client sent since follows it
        cursor = FrameCursor()
        cursor.feed(bytes(upstream.buffer[response.size :]))
        client.write(upstream.buffer)
        upstream.buffer.clear()
        relay = Relay(client, upstream, session, worker.name)
        relay.start(cursor)
        self._register(relay, worker, proposed)

    async def _route_json(self, client: Side, upgrade: Upgrade) -> None:
        subprotocol = self.auth.subprotocol(upgrade.subprotocols)
        client.write(handshake.switching_protocols(upgrade.key, subprotocol))
        del client.buffer[: upgrade.size]
        try:
            grant = self._authenticate(upgrade)
            session, user, join_frames = await self._read_join(client)
            if grant is not None:
                grant.check_user(user)
                grant.check_session(session)
            forwarded: tuple[tuple[str, str], ...] = (
                ("X-Forwarded-For", client.peer_ip),
                (ROUTER_HEADER, self.settings.router_id),
                (SESSION_HEADER, session),  # the worker claims it before accepting
            )
            for name in ("Origin", "User-Agent"):
                if (value := upgrade.header(name)) is not None:
                    forwarded += ((name, value),)
            if upgrade.subprotocols:
                forwarded += (("Sec-WebSocket-Protocol", ", ".join(upgrade.subprotocols)),)
            upstream, response, worker, proposed = await self._open_upstream(
                session,
                lambda w: handshake.upgrade_request(upgrade.target, w.address, forwarded),
            )
        except AuthRefused as exc:
            self._auth_refused(client, exc)
            client.write(frames.text_frame(jmsg.auth_error(exc)))
            client.write(frames.close_frame(exc.code, exc.reason))
            client.linger()
            return
        except Refused as refused:
            if refused.code == codes.NORMAL:  # the client closed first; its close was answered
                client.close()
                return
            if refused.code == codes.PROTOCOL_ERROR:
                client.buffer.clear()  # past a bad frame no boundary can be trusted
            elif refused.code != codes.POLICY:
                error = jmsg.error(jmsg.SESSION_UNAVAILABLE, refused.reason)
                client.write(frames.text_frame(error))
            client.write(frames.close_frame(refused.code, refused.reason))
            client.linger()
            return
        cursor = FrameCursor()
        cursor.feed(bytes(upstream.buffer[response.size :]))
        client.write(upstream.buffer[response.size :])
        upstream.buffer.clear()
        upstream.write(join_frames)
        relay = Relay(client, upstream, session, worker.name)
        relay.start(cursor)
        self._register(relay, worker, proposed)

    async def _read_join(self, client: Side) -> tuple[str, str, bytes]:
        """Reads messages until a valid join: (session id, user id, the join's frames)."""
        deadline = time.monotonic() + self.settings.join_timeout_ms / 1000
        limit = self.settings.max_message_bytes
        raw, payload = bytearray(), bytearray()
        while True:
            try:
                found = frames.parse_client_frame(client.buffer, limit)
            except frames.FrameTooLarge as exc:
                raise Refused(codes.TOO_BIG, str(exc)) from None
            except frames.ProtocolError as exc:
                self.metrics.client_errors.labels("protocol_error").inc()
                raise Refused(codes.PROTOCOL_ERROR, str(exc)) from None
            if found is None:
                try:
                    await client.wait_data(deadline - time.monotonic())
                except TimeoutError:
                    raise Refused(codes.POLICY, "no join message in time") from None
                continue
            frame, size = found
            data = bytes(frame.data)
            wire = bytes(client.buffer[:size])
            del client.buffer[:size]
            if frame.opcode == frames.OP_PING:
                client.write(frames.frame(frames.OP_PONG, data))
                continue
            if frame.opcode == frames.OP_PONG:
                continue
            if frame.opcode == frames.OP_CLOSE:
                client.write(frames.frame(frames.OP_CLOSE, data[:2]))
                raise Refused(codes.NORMAL, "closed by client")
            if (frame.opcode == frames.OP_CONT) != bool(raw):  # fragments in order (§5.4)
                self.metrics.client_errors.labels("protocol_error").inc()
                raise Refused(
                    codes.PROTOCOL_ERROR,
                    "new message inside a fragmented one"
                    if raw
                    else "continuation frame without a message to continue",
                )
            raw += wire
            payload += data
            if len(payload) > limit:
                raise Refused(codes.TOO_BIG, f"message exceeds the {limit}-byte limit")
            if not frame.fin:
                continue
            message_frames, message = bytes(raw), bytes(payload)
            raw.clear()
            payload.clear()
            try:
                parsed = jmsg.parse(message)
                if parsed["type"] == "ping":
                    client.write(frames.text_frame(jmsg.pong()))
                    continue
                if parsed["type"] != "join":
                    raise jmsg.MessageError(jmsg.NOT_JOINED, "send a 'join' message first")
                session, user = jmsg.join_ids(parsed)
            except jmsg.MessageError as exc:
                self.metrics.client_errors.labels("json").inc()
                client.write(frames.text_frame(jmsg.error(exc.error, exc.reason)))
                continue
            return session, user, message_frames

    # --- live sessions and hand-off ------------------------------------------------------------

    def _register(self, relay: Relay, worker: WorkerInfo, proposed: WorkerInfo) -> None:
        """``proposed``: the ring's owner when routing began (``worker`` differs from it when
        the session's recorded owner is another worker)."""
        self.live.setdefault(relay.session, set()).add(relay)
        relay.on_end = self._unregister
        self.metrics.connections_active.inc()
        self.metrics.routed.labels(worker.name).inc()
        owner = self.membership.owner(relay.session)
        if owner is not None and owner.name != proposed.name and owner.name != worker.name:
            # The ring changed while this connection was being set up.
            self._start_handoff(relay.session, worker.name, owner.name)

    def _unregister(self, relay: Relay) -> None:
        relays = self.live.get(relay.session)
        if relays is not None and relay in relays:
            relays.discard(relay)
            self.metrics.connections_active.dec()
            if not relays:
                del self.live[relay.session]

    def ring_changed(self, before: tuple[str, ...], after: tuple[str, ...]) -> None:
        """Hands off the live sessions whose owner on the ring changed (only those: a session
        relayed to its recorded owner, which the ring did not propose, stays where it is)."""
        for session, relays in list(self.live.items()):
            owner = self.membership.owner(session)
            if owner is None:
                continue  # nowhere to send them; their connections end with their worker
            if ring.owner(session, before) == owner.name:
                continue
            for old in {r.worker for r in relays if r.worker != owner.name}:
                self._start_handoff(session, old, owner.name)

    def _start_handoff(self, session: str, old: str, new: str) -> None:
        if (session, old) in self._handoffs:
            return
        self._handoffs.add((session, old))
        self._gates.setdefault(session, asyncio.Event())
        self._spawn(self._handoff(session, old, new), f"handoff:{session}")

    async def _handoff(self, session: str, old: str, new: str) -> None:
        relays = [r for r in self.live.get(session, ()) if r.worker == old]
        self.metrics.handoffs.inc()
        started = time.monotonic()
        outcome = "closed by router"
        try:
            info = self.membership.find(old)
            token = sending_token(self.settings.admin_token)
            if info is not None and info.state != "down" and token:
                try:
                    response = await self.http.post(
                        f"http://{info.address}/admin/sessions/{quote(session)}/handoff",
                        headers={"authorization": f"Bearer {token}"},
                        timeout=self.settings.handoff_timeout_ms / 1000,
                    )
                    outcome = f"worker answered {response.status_code}"
                except httpx.HTTPError as exc:
                    outcome = f"worker unreachable ({type(exc).__name__})"
            for relay in list(self.live.get(session, ())):
                if relay.worker == old:
                    relay.close(codes.RESTART, f"session moved to worker {new}; reconnect")
        finally:
            self._handoffs.discard((session, old))
            if not any(key[0] == session for key in self._handoffs):
                gate = self._gates.pop(session, None)
                if gate is not None:
                    gate.set()
            log.info(
                "handoff",
                session=session,
                old=old,
                new=new,
                connections=len(relays),
                outcome=outcome,
                seconds=round(time.monotonic() - started, 3),
            )
