"""The worker process's cyclic collector: start-up frozen out of it, collections less often."""

from __future__ import annotations

import json
import subprocess
import sys


class TestGcTuning:
    def test_start_up_is_frozen_and_the_thresholds_are_raised(self) -> None:
        """In a process of its own (freezing this one would change every later test)."""
        probe = (
            "import gc, json\n"
            "from worker.__main__ import GC_THRESHOLDS, tune_gc\n"
            "tune_gc()\n"
            "print(json.dumps([gc.get_freeze_count(), gc.get_threshold(), GC_THRESHOLDS]))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        )
        frozen, thresholds, wanted = json.loads(out.stdout)
        assert frozen > 10_000  # the modules and the app, not a handful of objects
        assert thresholds == wanted and wanted[0] > 700
