"""The trace benchmark: its generated trace, and one short replay through both servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.trace import exact
from bench.trace_format import load, replay, save
from bench.trace_gen import generate
from tests.jsclient import ensure_node_modules, requires_node

ROOT = Path(__file__).resolve().parent.parent


class TestGeneratedTrace:
    def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_trace(
        self, tmp_path: Path
    ) -> None:
        for name, seed in (("a.json.gz", 7), ("b.json.gz", 7), ("c.json.gz", 8)):
            save(generate(4000, seed), tmp_path / name)
        a, b, c = ((tmp_path / n).read_bytes() for n in ("a.json.gz", "b.json.gz", "c.json.gz"))
        assert a == b
        assert a != c

    def test_its_patches_replay_to_its_end_content(self) -> None:
        trace = generate(20_000, 1)
        assert len(trace.txns) == 20_000
        assert trace.start == ""
        assert replay(trace) == trace.end

    def test_it_types_like_a_person(self) -> None:
        """Mostly single characters at the cursor, with backspaces, jumps and some deletes of
        a selection; words, sentences and lines."""
        trace = generate(20_000, 2)
        patches = [p for txn in trace.txns for p in txn]
        typed = [p for p in patches if p[1] == 0 and len(p[2]) == 1]
        backspaces = [p for p in patches if p[1] == 1 and p[2] == ""]
        selections = [p for p in patches if p[1] > 1]
        assert len(typed) > 0.6 * len(patches)
        assert 0.1 * len(patches) < len(backspaces) < 0.4 * len(patches)
        assert selections
        length, jumps = 0, 0
        for pos, delete, insert in patches:
            if pos < length - delete - 1:  # not at the end of the text: the cursor moved there
                jumps += 1
            length += len(insert) - delete
        assert jumps > 50
        assert trace.end.count("\n") > 100 and trace.end.count(". ") > 50

    def test_plain_and_gzipped_files_read_back_alike(self, tmp_path: Path) -> None:
        trace = generate(1000, 3)
        save(trace, tmp_path / "t.json")
        save(trace, tmp_path / "t.json.gz")
        assert load(tmp_path / "t.json") == load(tmp_path / "t.json.gz") == trace
        assert json.loads((tmp_path / "t.json").read_text())["endContent"] == trace.end


class TestVerdict:
    def test_a_run_is_exact_only_if_every_client_saw_the_end_content(self) -> None:
        good: dict[str, Any] = {
            "exact_typist": True,
            "exact_watcher": True,
            "fresh_live": {"exact": True},
            "fresh_cold": {"exact": True},
        }
        assert exact(good)
        assert not exact({**good, "exact_watcher": False})
        assert not exact({**good, "fresh_cold": {"exact": False}})
        assert not exact({**good, "error": "timeout"})


@pytest.mark.node
@requires_node
async def test_a_short_replay_is_exact_on_both_servers_and_every_figure_is_there(
    tmp_path: Path,
) -> None:
    await ensure_node_modules()
    trace = tmp_path / "short.json.gz"
    save(generate(3000, 5), trace)
    done = subprocess.run(
        [sys.executable, "-m", "bench.trace", "--trace", str(trace), "--times", "2", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["meta"]["keystrokes"] == 3000 and report["meta"]["times"] == 2
    rows = {row["server"]: row for row in report["rows"]}
    assert set(rows) == {"collab", "reference"}
    for row in rows.values():
        assert "error" not in row
        assert row["exact_typist"] and row["exact_watcher"]
        assert row["keystrokes"] == 6000
        assert 0 < row["replay_ms"] < 60_000
        assert len(row["per_file_ms"]) == 2
        assert 10 * 2**20 < row["rss_start"] <= row["rss_peak"] < 2**30
        assert 0 < row["rss_end"] <= row["rss_peak"]
        assert 0 < row["encoded_bytes"] < 100_000
        assert row["fresh_live"]["exact"] and 0 < row["fresh_live"]["sync_ms"] < 30_000
    collab = rows["collab"]
    assert collab["fresh_cold"]["exact"] and 0 < collab["fresh_cold"]["sync_ms"] < 30_000
    assert 10 * 2**20 < collab["rss_after_load"] < 2**30
    assert collab["idle_unload"] is True
    live, unloaded = collab["stored_live"], collab["stored_unloaded"]
    assert live["bytes"]["updates"] > 0 and live["objects"]["updates"] > 0
    # Unloading compacts: the segments are merged into snapshots, nothing of the text is lost.
    assert unloaded["objects"]["updates"] == 0 and unloaded["objects"]["snapshots"] >= 1
    doc = unloaded["bytes"]["updates"] + unloaded["bytes"]["snapshots"]
    assert doc >= 0.8 * collab["encoded_bytes"]  # at least about the document itself
    assert set(live["bytes"]) == {"updates", "snapshots", "log", "other"}
