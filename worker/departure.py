"""Why a session leaves a worker, and what each reason asks of the leaving.

Every departure goes through ``SessionManager.leave`` (``worker.manager``); a ``Departure`` is
the policy it follows, one per reason below.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Departure:
    """One reason to leave, and what it asks of ``SessionManager.leave``."""

    event: str  # the log line once it has left
    only_if_idle: bool = False  # stays if a client came back meanwhile
    commit_first: bool = False  # a git session's uncommitted edits are committed first
    # Its segments are compacted on the way out, so the next load reads one object: with
    # nobody connected (an idle unload), before its record is released.
    compact: bool = False
    # The same once its clients are sent away and its record released (a drain, a hand-off):
    # it delays nobody. Compacting before that, while the clients waited to be sent away,
    # intermittently turned the web workspace's 1012 "draining" message into "connection
    # lost" (tests/web; the cause was not found).
    compact_after: bool = False
    clients_away: str | None = None  # clients are closed with 1012 and this reason
    # A fenced worker may no longer own the session: the record is released only if its lease
    # is valid again, and nothing else is written for it.
    fenced: bool = False


# Nobody has been connected for SESSION_IDLE_MS.
IDLE = Departure("session_unloaded", only_if_idle=True, commit_first=True, compact=True)
# Another worker wants it and nobody is connected here: let it go now, not after the idle time.
TO_PEER = Departure("session_released_to_peer", only_if_idle=True)
# A router moved it to another worker (a ring change).
HANDED_OFF = Departure(
    "session_handed_off",
    commit_first=True,
    compact_after=True,
    clients_away="session moved to another worker",
)
# This worker is draining (admin drain, SIGTERM).
DRAINED = Departure(
    "session_drained", commit_first=True, compact_after=True, clients_away="worker draining"
)
# This worker's lease lapsed: what it holds is written once storage takes it, then it is gone.
FENCED = Departure("fenced_session_settled", fenced=True)
