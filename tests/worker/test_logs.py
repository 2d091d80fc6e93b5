"""Structured logs as the processes write them (worker/logs.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT

_PROGRAM = """
import structlog
from contract.logs import configure_logging

configure_logging({fmt!r})


def handle(target):
    token = "SECRET-TOKEN-VALUE"
    raise ValueError("boom")


try:
    handle("/yjs/s?token=SECRET-TOKEN-VALUE")
except ValueError:
    structlog.get_logger("test").exception("handler_failed")
"""


class TestLogs:
    def test_tracebacks_never_print_frame_locals_where_tokens_live(self) -> None:
        """A failure logs its traceback, not the request target or token in the frame's locals."""
        for fmt in ("text", "json"):
            done = subprocess.run(
                [sys.executable, "-c", _PROGRAM.format(fmt=fmt)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert "handler_failed" in done.stderr and "ValueError: boom" in done.stderr
            assert "SECRET-TOKEN-VALUE" not in done.stderr, done.stderr
