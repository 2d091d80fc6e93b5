"""Auto-commit policy for live git sessions: when to commit, and who wrote it.

A git session is committed ``COOLDOWN_MS`` after its last edit (any edit restarts the wait),
before it is unloaded or handed off, and on demand (admin API). The author is the user who
edited last; every other user who edited since the previous commit is a co-author. The storage
side (packs first, ref by compare-and-swap, merge on a lost race) is ``worker.git_branch``.

A failed commit, whatever its cause (storage, a lost race, a damaged local repository), is
logged with its traceback and counted as ``collab_commits_total{outcome="error"}``; the next
automatic attempt waits ``COOLDOWN_MS * 2**failures`` (at most an hour), so a session whose
commits keep failing does not retry every cooldown forever.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import anyio
import structlog

from contract.timefmt import iso_time

from .git_branch import CommitOutcome, StaleOwner, commit_session
from .git_objects import Person
from .metrics import WorkerMetrics
from .session import Session
from .settings import Settings
from .storage import SessionStore

log = structlog.get_logger("worker.autocommit")

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], object]

MAX_BACKOFF_S = 3600.0


def no_history(session_id: str) -> str:
    """Why a session without git history is not committed on demand (admin API, HTTP API)."""
    return (
        f"session {session_id} has no git history; nothing is committed (a session has history"
        " when it is created with POST /api/sessions, the start page's Create, or imported with"
        " collab import)"
    )


def _remove_tree(path: Path) -> None:
    """Renamed first, then removed: a cache made again at once for the same session (its
    client came straight back) never meets a half-removed tree."""
    gone = path.with_name(f".removing-{path.name}-{secrets.token_hex(4)}")
    try:
        path.rename(gone)
    except FileNotFoundError:
        return
    shutil.rmtree(gone, ignore_errors=True)


class _Failures:
    """Consecutive failed commits of one session, and when the next automatic one may run."""

    __slots__ = ("count", "retry_at")

    def __init__(self) -> None:
        self.count = 0
        self.retry_at = 0.0


class AutoCommitter:
    def __init__(self, settings: Settings, store: SessionStore, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: set[str] = set()
        self._failures: dict[str, _Failures] = {}
        # The last few commit attempts, newest last, for `collab status` (admin status).
        self.recent: deque[dict[str, Any]] = deque(maxlen=10)

    def forget(self, session_id: str) -> None:
        self._locks.pop(session_id, None)
        self._failures.pop(session_id, None)

    async def drop_cache(self, session_id: str) -> None:
        """The session left this worker: its local git cache goes (the history is in
        storage, and the next worker that commits it builds its own from there)."""
        await anyio.to_thread.run_sync(_remove_tree, self.settings.git_caches / session_id)

    async def clear_caches(self) -> None:
        """At start: this worker holds no session yet, so every cache of its own is left over
        (a SIGKILL, a crash) and goes."""
        await anyio.to_thread.run_sync(_remove_tree, self.settings.git_caches)

    async def try_commit(self, session: Session) -> bool:
        """``commit`` for callers that go on either way (a hand-off): False when it failed."""
        try:
            await self.commit(session)
        except Exception:  # logged with its traceback and counted in commit()
            return False
        return True

    async def commit(self, session: Session, *, force: bool = False) -> CommitOutcome | None:
        """Commits the session's files to its git history; None if it is not a git session.

        The author is the user who edited last; everyone else who edited since the previous
        commit is a co-author. Edits that arrive while the commit runs stay for the next one.
        """
        if not session.is_git:
            return None
        lock = self._locks.setdefault(session.id, asyncio.Lock())
        async with lock:
            if not session.editors and not force:
                return CommitOutcome(None)
            started = time.monotonic()
            editors = dict(session.editors)
            names = list(editors)
            author = Person.for_user(names[-1] if names else "collab")
            coauthors = [Person.for_user(n) for n in names[:-1]]
            repo_dir = self.settings.git_cache(session.id)
            texts, blobs = session.snapshot_files()
            try:
                files = dict(texts)
                for path, digest in blobs.items():
                    files[path] = await self.store.get_blob(session.id, digest)
                outcome = await commit_session(
                    self.store,
                    session.id,
                    repo_dir,
                    files,
                    author,
                    coauthors,
                    epoch=session.claim.epoch if session.claim is not None else 0,
                    still_owner=lambda: session.lease_valid() and not session.fenced,
                )
            except Exception as exc:
                self._failed(session.id, exc, author.name)
                raise
            finally:
                self.metrics.commit_seconds.observe(time.monotonic() - started)
            self._failures.pop(session.id, None)
            for user, at in editors.items():
                if session.editors.get(user) == at:
                    del session.editors[user]
            result = "ok" if outcome.sha else "unchanged"
            self.metrics.commits.labels(result).inc()
            self._remember(session.id, result, outcome.sha, author.name, len(outcome.changed))
            return outcome

    def _failed(self, session_id: str, exc: Exception, author: str) -> None:
        failures = self._failures.setdefault(session_id, _Failures())
        failures.count += 1
        delay = min(self.settings.cooldown_ms / 1000 * 2**failures.count, MAX_BACKOFF_S)
        failures.retry_at = time.monotonic() + delay
        if isinstance(exc, StaleOwner):
            # Not a fault: the session has a newer owner, which commits it.
            self.metrics.commits.labels("refused").inc()
            log.warning("commit_refused", session=session_id, reason=str(exc))
            self._remember(session_id, "refused", None, author, error=str(exc))
            return
        self.metrics.commits.labels("error").inc()
        log.error(
            "commit_failed",
            session=session_id,
            error=f"{type(exc).__name__}: {exc}",
            attempt=failures.count,
            next_attempt_in_s=round(delay, 1),
            exc_info=exc,
        )
        self._remember(session_id, "error", None, author, error=str(exc))

    def retry_at(self, session_id: str) -> float:
        """When the next automatic commit of the session may run (monotonic; 0: any time)."""
        failures = self._failures.get(session_id)
        return failures.retry_at if failures is not None else 0.0

    def _remember(
        self,
        session_id: str,
        outcome: str,
        sha: str | None,
        author: str,
        changed: int = 0,
        error: str | None = None,
    ) -> None:
        self.recent.append(
            {
                "at": iso_time(),
                "sessionId": session_id,
                "outcome": outcome,
                "commit": sha,
                "author": author,
                "changed": changed,
                "error": error,
            }
        )

    def start_due(self, sessions: Iterable[Session], spawn: Spawn) -> None:
        """Starts a commit for every git session whose cooldown has passed since its last edit."""
        cooldown = self.settings.cooldown_ms / 1000
        now = time.monotonic()
        for session in sessions:
            if (
                session.is_git
                and session.editors
                and session.last_edit is not None
                and now - session.last_edit >= cooldown
                and now >= self.retry_at(session.id)
                and session.id not in self._running
            ):
                self._running.add(session.id)

                async def one(s: Session = session) -> None:
                    try:
                        await self.try_commit(s)  # a failure sets this session's backoff
                    finally:
                        self._running.discard(s.id)

                spawn(one)
