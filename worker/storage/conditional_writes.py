"""The proof, at start, that the store honours conditional writes: one live owner rests on them.

Leases and owner records change only by compare-and-swap (``Store.put_if``): a create-only put
(``If-None-Match: *`` on S3) and a swap from the version read (``If-Match``). A store that takes
both unconditionally (an S3 look-alike that ignores the headers, a proxy that drops them) would
let two workers each "win" the same session, and nothing would say so. So before this worker
takes its lease, and with it any session, it shows on a key of its own that a create over an
existing object and a swap from a stale version both fail, then deletes the key. A store that
fails the proof stops the worker with an error naming the store and the fix.

A store that does not answer proves nothing either way: the worker starts while storage is down
(readiness "starting"), the proof is tried again until storage answers, and the coordination
store (``guarded``) refuses every compare-and-swap until it has passed, so no lease is written
and no session claimed before.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus

from .base import StorageError, StorageUnavailable, Store

__all__ = ["ConditionalWriteProof", "ConditionalWritesIgnored", "prove_conditional_writes"]

log = structlog.get_logger("worker.storage.conditional_writes")

PROBE_PREFIX = "probe/conditional-writes/"
FIX = (
    "use a store that honours conditional PUTs (If-None-Match: * and If-Match), with nothing "
    "in between that drops those headers; docs/storage.md lists the stores this was tested on"
)
_FIRST_ATTEMPT_S = 2.0  # start-up waits this long for the first attempt, at most
_RETRY_MIN_S, _RETRY_MAX_S = 0.2, 2.0


class ConditionalWritesIgnored(StorageError):
    """The store answered, but not as a compare-and-swap must (fields: store, reason)."""

    def __init__(self, store: str, reason: str) -> None:
        self.store = store
        self.reason = reason
        super().__init__(f"{store} does not honour conditional writes: {reason}")


async def prove_conditional_writes(store: Store, key: str, where: str) -> None:
    """Raises ``ConditionalWritesIgnored`` unless ``store`` honours both conditions on ``key``
    (a key nobody else writes; deleted after), or ``StorageError`` when it does not answer."""
    try:
        created = await store.put_if(key, b"created", None)
        if created is None:
            raise ConditionalWritesIgnored(where, "a create-only put of a new key was refused")
        if await store.put_if(key, b"created again", None) is not None:
            raise ConditionalWritesIgnored(
                where, "If-None-Match: * was ignored (a create-only put replaced an object)"
            )
        swapped = await store.put_if(key, b"swapped", created)
        if swapped is None:
            raise ConditionalWritesIgnored(
                where, "a swap from the current version (If-Match) was refused"
            )
        if await store.put_if(key, b"stale swap", created) is not None:
            raise ConditionalWritesIgnored(
                where, "If-Match was ignored (a swap from a stale version replaced an object)"
            )
        if await store.get_versioned(key) != (b"swapped", swapped):
            raise ConditionalWritesIgnored(where, "a refused put changed the object anyway")
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await store.delete(key)
            except StorageError:
                pass  # storage went away meanwhile: the next attempt's key is a new one


class ConditionalWriteProof:
    """Runs the proof for one worker (``run``) and keeps compare-and-swaps back until it
    passed (``guarded``). ``on_refused`` is called once when the store fails it; by default the
    process is stopped the way an operator would stop it (SIGTERM: the ordered stop runs), when
    it has a handler for that; ``refused`` then tells ``python -m worker`` to exit non-zero."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        where: str,
        on_refused: Callable[[ConditionalWritesIgnored], None] | None = None,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.where = where
        self.on_refused = on_refused if on_refused is not None else _stop_this_process
        self.proven = False
        self.refused: ConditionalWritesIgnored | None = None
        self.last_error: StorageError | None = None
        self.guarded: Store = _Guarded(store, self)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Proves until the store answers; ``started`` after the first attempt (at most
        ``_FIRST_ATTEMPT_S``), so a worker whose storage answers takes its lease at once and
        one whose storage is down still starts."""
        first = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._prove_until_answered, first)
            with anyio.move_on_after(_FIRST_ATTEMPT_S):
                await first.wait()
            task_status.started()

    async def _prove_until_answered(self, first: anyio.Event) -> None:
        delay = _RETRY_MIN_S
        while True:
            key = f"{PROBE_PREFIX}{self.worker_id}-{secrets.token_hex(4)}"
            try:
                await prove_conditional_writes(self.store, key, self.where)
            except ConditionalWritesIgnored as exc:
                self.refused = exc
                log.error("storage_refused", store=exc.store, reason=exc.reason, fix=FIX)
                first.set()
                self.on_refused(exc)
                return
            except StorageError as exc:
                if self.last_error is None:
                    log.warning(
                        "conditional_writes_unproven",
                        store=self.where,
                        error=str(exc),
                        consequence="no session is taken until storage answers the proof",
                    )
                self.last_error = exc
                first.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            self.proven = True
            first.set()
            log.info("conditional_writes_proven", store=self.where)
            return


class _Guarded:
    """The store, refusing ``put_if`` as unavailable until the proof passed (leases and owner
    records are written only through here); everything else passes straight through."""

    def __init__(self, inner: Store, proof: ConditionalWriteProof) -> None:
        self.inner = inner
        self.proof = proof

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        if not self.proof.proven:
            why = self.proof.refused or self.proof.last_error or "not tried yet"
            raise StorageUnavailable(
                "put_if", key, RuntimeError(f"conditional writes not proven on this store: {why}")
            )
        return await self.inner.put_if(key, data, version)

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)

    async def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        return await self.inner.get_versioned(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list(self, prefix: str) -> list[str]:
        return await self.inner.list(prefix)

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        return await self.inner.list_sizes(prefix)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _stop_this_process(exc: ConditionalWritesIgnored) -> None:
    """SIGTERM to ourselves when something handles it (``python -m worker`` does: drain, then
    stop); embedded without a handler (a test's event loop), the worker stays up refusing every
    session instead of killing its host."""
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.raise_signal(signal.SIGTERM)
