"""The no-loss invariant under adversarial interleavings (DESIGN.md section 6).

Writers, compactors and a loader share one session.  A scheduler shim wraps the real store and,
at every storage request, lets Hypothesis choose which actor's pending request runs next (and,
in some examples, whether it fails before or after reaching storage).  The shim only orders and
fails calls; the bytes go to the real store.

Properties checked:

* every token whose append returned successfully is in the final load, and stays there after a
  final compaction;
* a load that *started* after an append returned contains that append's token (so a load can
  never miss data a concurrent compactor is moving);
* nothing is ever reported corrupt.
"""

from __future__ import annotations

import itertools
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from tests.s3server import S3Server
from worker.storage import LocalStore, MinioStore, SessionStore, StorageUnavailable, Store

T = TypeVar("T")
SESSION = "prop"
DOC = "shared.txt"


@dataclass
class Actor:
    """One concurrent participant; its requests pass the gate one at a time."""

    name: str
    state: str = "running"  # running | waiting | finished
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    grant: anyio.Event = field(default_factory=anyio.Event)
    outcome: str = "ok"  # ok | fail-before | fail-after, chosen by the scheduler
    op: str = ""  # the request waiting at the gate


_current: ContextVar[Actor] = ContextVar("actor")


class Scheduler:
    """Runs actors so that exactly one storage request proceeds at a time, in Hypothesis' order.

    It picks only when every actor is waiting at the gate or finished, so the choice never
    depends on thread or network timing, only on what Hypothesis draws.
    """

    def __init__(self, data: st.DataObject, inject_failures: bool) -> None:
        self.data = data
        self.inject_failures = inject_failures
        self.actors: list[Actor] = []
        self._changed = anyio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def gate(self, op: str, key: str, call: Callable[[], Awaitable[T]]) -> T:
        actor = _current.get()
        async with actor.lock:
            actor.op = op
            actor.grant = anyio.Event()
            actor.state = "waiting"
            self.changed()
            try:
                await actor.grant.wait()
            except BaseException:
                actor.state = "running"
                self.changed()
                raise
            if actor.outcome == "fail-before" and op != "think":
                raise StorageUnavailable(op, key, None)
            result = await call()
            if actor.outcome == "fail-after" and op != "think":
                raise StorageUnavailable(op, key, None)  # it happened, but the caller can't know
            return result

    async def think(self, steps: int) -> None:
        """Wait for ``steps`` turns of the scheduler, so Hypothesis decides when we go on."""
        for _ in range(steps):
            await self.gate("think", "", anyio.lowlevel.checkpoint)

    async def run(self, actors: dict[str, Callable[[], Coroutine[Any, Any, None]]]) -> None:
        async def wrap(actor: Actor, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
            _current.set(actor)
            try:
                await body()
            finally:
                actor.state = "finished"
                self.changed()

        try:
            async with anyio.create_task_group() as tg:
                for name, body in sorted(actors.items()):
                    actor = Actor(name)
                    self.actors.append(actor)
                    tg.start_soon(wrap, actor, body)
                await self._drive()
        except BaseExceptionGroup as group:
            # Hypothesis signals "out of data" (StopTest) and failures by raising; it must see
            # them as raised, not inside the task group's ExceptionGroup.
            raise _most_relevant(group) from None

    async def _drive(self) -> None:
        current: Actor | None = None
        burst, whole = 0, False
        while True:
            while any(a.state == "running" for a in self.actors):
                self._changed = anyio.Event()
                await self._changed.wait()
            waiting = [a for a in self.actors if a.state == "waiting"]
            if not waiting:
                return
            if (
                current is not None
                and current.state == "waiting"
                and (current.op != "think" if whole else burst > 0)
            ):
                actor, burst = current, burst - 1
            else:
                # A burst lets one actor run several requests in a row, or a whole operation (up
                # to its next think step: a compaction, say), between two requests of another.
                actor = waiting[self.data.draw(st.integers(0, len(waiting) - 1), label="next")]
                burst = self.data.draw(st.integers(0, 10), label="burst")
                whole = burst == 10
                current = actor
            actor.outcome = "ok"
            if self.inject_failures:
                roll = self.data.draw(st.integers(0, 19), label="fail")
                actor.outcome = {0: "fail-before", 1: "fail-after"}.get(roll, "ok")
            actor.state = "running"
            actor.grant.set()


def _most_relevant(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def flatten(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                flatten(inner)
        else:
            leaves.append(exc)

    flatten(group)
    # Hypothesis' control-flow exceptions are BaseExceptions; they win over test failures.
    control = [e for e in leaves if not isinstance(e, Exception)]
    return (control or leaves)[0]


class ScheduledStore:
    """The real store behind the scheduler's gate."""

    def __init__(self, inner: Store, scheduler: Scheduler) -> None:
        self.inner, self.scheduler = inner, scheduler

    async def get(self, key: str) -> bytes | None:
        return await self.scheduler.gate("get", key, lambda: self.inner.get(key))

    async def put(self, key: str, data: bytes) -> None:
        await self.scheduler.gate("put", key, lambda: self.inner.put(key, data))

    async def delete(self, key: str) -> None:
        await self.scheduler.gate("delete", key, lambda: self.inner.delete(key))

    async def list(self, prefix: str) -> list[str]:
        return await self.scheduler.gate("list", prefix, lambda: self.inner.list(prefix))

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        return await self.scheduler.gate("list", prefix, lambda: self.inner.list_sizes(prefix))

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


def merged_text(update: bytes | None) -> str:
    doc = Doc()
    if update is not None:
        doc.apply_update(update)
    return str(doc.get("content", type=Text))


@dataclass
class Plan:
    appends: list[int]  # per writer: how many appends
    compactions: list[list[int]]  # per compactor: think steps before each compaction
    loads: list[int]  # think steps before each of the loader's loads
    inject_failures: bool


plans = st.builds(
    Plan,
    appends=st.lists(st.integers(1, 4), min_size=2, max_size=3),
    compactions=st.lists(
        st.lists(st.integers(0, 4), min_size=1, max_size=3), min_size=1, max_size=2
    ),
    loads=st.lists(st.integers(0, 6), max_size=3),
    inject_failures=st.booleans(),
)


async def check_no_loss(store: Store, plan: Plan, data: st.DataObject) -> None:
    scheduler = Scheduler(data, plan.inject_failures)
    shim = ScheduledStore(store, scheduler)
    # Object names order the reads within an actor; a counting clock makes that order, and so
    # each example, reproducible (wall-clock milliseconds would make shrinking flaky).
    ticks = itertools.count(1)

    def clock() -> int:
        return next(ticks)

    acked: set[str] = set()
    attempted: set[str] = set()

    def writer(index: int, appends: int) -> Callable[[], Coroutine[Any, Any, None]]:
        async def body() -> None:
            sessions = SessionStore(shim, f"w{index}", clock=clock)
            doc = Doc()
            text = doc.get("content", type=Text)
            pending: list[tuple[str, bytes]] = []  # like the worker: kept until a flush succeeds
            for n in range(appends):
                token = f"<w{index}.{n}>"
                before = doc.get_state()
                text += token
                pending.append((token, doc.get_update(before)))
                attempted.add(token)
                try:
                    await sessions.append_updates(SESSION, [(DOC, u) for _, u in pending])
                except StorageUnavailable:
                    continue
                acked.update(t for t, _ in pending)
                pending.clear()

        return body

    def compactor(index: int, delays: list[int]) -> Callable[[], Coroutine[Any, Any, None]]:
        async def body() -> None:
            sessions = SessionStore(shim, f"c{index}", clock=clock)
            for delay in delays:
                await scheduler.think(delay)
                try:
                    await sessions.compact(SESSION)
                except StorageUnavailable:
                    pass

        return body

    def loader(delays: list[int]) -> Callable[[], Coroutine[Any, Any, None]]:
        async def body() -> None:
            sessions = SessionStore(shim, "reader", clock=clock)
            for delay in delays:
                await scheduler.think(delay)
                must_see = set(acked)  # appends that returned before this load began
                try:
                    loaded = await sessions.load(SESSION)
                except StorageUnavailable:
                    continue
                text = merged_text(loaded.docs.get(DOC))
                missing = {t for t in must_see if t not in text}
                assert not missing, f"a load missed acknowledged appends {missing}"

        return body

    actors = {f"w{i}": writer(i, n) for i, n in enumerate(plan.appends)}
    actors |= {f"c{i}": compactor(i, n) for i, n in enumerate(plan.compactions)}
    actors["r"] = loader(plan.loads)
    with anyio.fail_after(60):
        await scheduler.run(actors)

    final = SessionStore(store, "final")
    text = merged_text((await final.load(SESSION)).docs.get(DOC))
    missing = {t for t in acked if t not in text}
    assert not missing, f"acknowledged appends lost: {sorted(missing)}"
    assert all(t in attempted for t in text.replace(">", ">\n").split()), "invented data?"
    await final.compact(SESSION)
    assert merged_text((await final.load(SESSION)).docs.get(DOC)) == text


# Sync tests that start one event loop per example: Hypothesis' own control flow (StopTest)
# then leaves each example cleanly instead of travelling through a shared async test runner.
@pytest.mark.timeout(900)  # only a failing run gets near this: shrinking replays many examples
@settings(
    max_examples=300,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=plans, data=st.data())
def test_no_acknowledged_update_is_lost_local(plan: Plan, data: st.DataObject) -> None:
    """Local store: any interleaving of writers, compactors and loads keeps every acked update."""

    async def example() -> None:
        with tempfile.TemporaryDirectory() as root:
            await check_no_loss(LocalStore(Path(root), fsync=False), plan, data)

    anyio.run(example)


@pytest.mark.s3
@pytest.mark.timeout(900)
@settings(
    max_examples=20,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=plans, data=st.data())
def test_no_acknowledged_update_is_lost_s3(
    s3_server: S3Server, plan: Plan, data: st.DataObject
) -> None:
    """The same property against the S3 server, through MinioStore, with fewer examples."""

    async def example() -> None:
        store = MinioStore(**s3_server.store_kwargs(f"prop-{uuid.uuid4().hex[:16]}"))
        try:
            await check_no_loss(store, plan, data)
        finally:
            await store.aclose()

    anyio.run(example)
