"""A child process that does not outlive the process that started it (Linux).

``collab up`` starts its router and workers in sessions of their own, so that Ctrl-C reaches
only ``collab up`` and it can stop them in the order that loses nothing. The price: when
``collab up`` dies without running that stop (SIGKILL, a crash, the OOM killer), nothing else
stops them, and they keep running with no parent, holding their ports, so the next ``collab
up`` cannot start.

So a parent that wants it names itself in the child's environment (``child_env``), and the
child, first thing (``die_with_parent``), asks the kernel for a SIGTERM when that parent dies
(``prctl(PR_SET_PDEATHSIG)``). A worker then drains, so nothing acknowledged is lost, and a
router stops, as after any SIGTERM. The parent may have died before the child asked (while it
was still importing); the kernel would then never send the signal, so the child compares its
parent with the one named and exits at once when they differ.

The kernel's "parent" is the *thread* that started the child: start such children from a thread
that lives as long as the process (``collab up`` uses its main thread), or they are stopped when
that thread ends.

Linux only. Elsewhere there is no parent-death signal, and the variable is dropped without
effect: ``collab up`` still stops its children on every signal it can catch, and only its
SIGKILL (or crash) leaves them running.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Mapping, MutableMapping

from .env import ConfigError

PARENT_PID = "COLLAB_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a child that must be sent SIGTERM when this process dies."""
    return {**env, PARENT_PID: str(os.getpid())}


def die_with_parent(env: MutableMapping[str, str] | None = None) -> None:
    """Honours ``COLLAB_PARENT_PID``: call it first in a program's ``main``.

    The variable is removed from ``env`` (``os.environ``), so that this process's own children
    are not taken for children of its parent. Raises ConfigError for a malformed value, and
    SystemExit when the named parent is already gone.
    """
    env = os.environ if env is None else env
    raw = env.pop(PARENT_PID, None)
    if raw is None or sys.platform != "linux":
        return
    try:
        expected = int(raw)
    except ValueError:
        expected = 0
    if expected <= 0:
        raise ConfigError(PARENT_PID, f"must be a process id, got {raw!r}")
    _signal_on_parent_death(signal.SIGTERM)
    # After asking, not before: a parent gone in between is seen here instead of signalling.
    if os.getppid() != expected:
        raise SystemExit(
            f"the process that started this one (pid {expected}, {PARENT_PID}) is gone; "
            "exiting instead of running without it"
        )


def _signal_on_parent_death(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
