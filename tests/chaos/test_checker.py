"""The chaos checker catches what it must, on run directories made to break one rule each.

Histories are written here by hand in the workload's format (bench/chaos/workload.py); the
storage tests write real session objects with the worker's own session store into a real S3
server and let the checker read them back with its own reader.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from bench.chaos.checker import check, main, tokens
from bench.chaos.owners import live_owners
from bench.chaos.recovery import outages, recovery
from tests.s3server import S3Server
from tests.support import ROOT

T0 = 1_800_000_000.0
SESSION = "chaos-1-0"
SHARED = "shared.txt"
FIRST_PARTY = {"worker", "router", "contract", "ops"}
# The checker and what it reads with; report.py is the verdict it shares with the orchestrator
# (pure: json and typing only).
CHECKER_MODULES = ["checker", "stored", "owners", "recovery", "report"]


class Run:
    """A synthetic run directory: a few clients' histories, faults and owner samples."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "clients").mkdir(parents=True)
        self.lines: dict[str, list[dict[str, Any]]] = {}

    def event(self, client: str, kind: str, t: float, ev: str, **fields: Any) -> None:
        line = {"t": T0 + t, "client": client, "kind": kind, "session": SESSION, "ev": ev}
        self.lines.setdefault(client, []).append(line | fields)

    def editor(self, client: str, inserted: list[str], final: str | None, **state: Any) -> None:
        kind = "yjs-js" if client.startswith("js") else "yjs-py"
        self.event(client, kind, 0, "start", router="ws://r0", path=SHARED)
        self.event(client, kind, 0.1, "connected", router="ws://r0")
        self.event(client, kind, 0.2, "synced")
        for i, token in enumerate(inserted):
            self.event(client, kind, 1 + i, "insert", path=SHARED, token=token)
        self.event(client, kind, 50, "stop")
        if final is not None:
            end = {"connected": True, "synced": True, "settled": True} | state
            self.event(client, kind, 60, "final", files={SHARED: final}, **end)

    def json_client(self, client: str, acked: dict[str, str], final: dict[str, str]) -> None:
        """``acked``: token → path of an acknowledged operation."""
        self.event(client, "json", 0, "start", router="ws://r1", shared=[SHARED])
        self.event(client, "json", 0.1, "connected", router="ws://r1", worker="w0")
        self.event(client, "json", 0.2, "synced")
        for req, (token, path) in enumerate(acked.items(), start=1):
            op = "update" if path == SHARED else "create"
            self.event(client, "json", 1 + req, "send", req=req, op=op, path=path, token=token)
            self.event(client, "json", 1.1 + req, "ack", req=req, op=op, path=path, token=token)
        self.event(client, "json", 50, "stop")
        end = {"connected": True, "synced": True, "settled": True}
        self.event(client, "json", 60, "final", files=final, **end)

    def jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        with open(self.root / name, "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)

    def check(self, s3: dict[str, Any] | None = None, bound: float = 2.0) -> dict[str, Any]:
        for client, lines in self.lines.items():
            self.jsonl(f"clients/{client}.jsonl", lines)
        return check(self.root, s3=s3, owner_bound_s=bound, storage_wait_s=0)


def healthy(run: Run, *, js: str | None = None, py: str | None = None) -> str:
    """Two editors and a JSON client on one file, all agreeing; returns that text."""
    text = "<js0-1>\n<json0-1>\n<py0-1>\n<py0-2>\n"
    run.editor("js0", ["<js0-1>"], text if js is None else js)
    run.editor("py0", ["<py0-1>", "<py0-2>"], text if py is None else py)
    own = "own/json0-2.txt"
    run.json_client(
        "json0", {"<json0-1>": SHARED, "<json0-2>": own}, {SHARED: text, own: "<json0-2>\n"}
    )
    return text


def counts(report: dict[str, Any]) -> dict[str, Any]:
    keys = ["lost", "missing_tokens", "duplicated_tokens", "diverged_files", "stuck_clients"]
    return {key: report[key] for key in keys}


ZERO = dict.fromkeys(
    ["lost", "missing_tokens", "duplicated_tokens", "diverged_files", "stuck_clients"], 0
)


class TestClientViews:
    def test_a_clean_run_reports_nothing_and_passes(self, tmp_path: Path) -> None:
        """Everyone agrees and has every token: all counts zero, two acks, ok."""
        run = Run(tmp_path)
        healthy(run)
        report = run.check()
        assert counts(report) == ZERO
        assert report["acked"] == 2
        assert report["ok"] is True
        assert report["details"]["inputs"]["inserts"] == 3

    def test_a_dropped_acknowledged_write_is_lost(self, tmp_path: Path) -> None:
        """An acked token that no final text has is lost, named with where it is missing."""
        run = Run(tmp_path)
        text = "<js0-1>\n<py0-1>\n<py0-2>\n"  # <json0-1> was acknowledged, then dropped
        run.editor("js0", ["<js0-1>"], text)
        run.editor("py0", ["<py0-1>", "<py0-2>"], text)
        run.json_client("json0", {"<json0-1>": SHARED}, {SHARED: text})
        report = run.check()
        assert report["lost"] == 1 and report["acked"] == 1
        (row,) = report["details"]["lost"]["rows"]
        assert row["token"] == "<json0-1>" and row["path"] == SHARED
        assert row["missing_in"] == ["js0", "json0", "py0"]
        assert report["ok"] is False

    def test_a_write_missing_from_one_client_only_is_lost_too(self, tmp_path: Path) -> None:
        """Lost means missing anywhere: one editor's final text without it is enough."""
        run = Run(tmp_path)
        healthy(run, js="<js0-1>\n<py0-1>\n<py0-2>\n")
        report = run.check()
        assert report["lost"] == 1
        assert report["details"]["lost"]["rows"][0]["missing_in"] == ["js0"]
        assert report["diverged_files"] == 1

    def test_a_missing_editor_token_is_reported(self, tmp_path: Path) -> None:
        """An inserted token absent from the converged text counts, naming client and token."""
        run = Run(tmp_path)
        text = "<js0-1>\n<py0-1>\n"
        run.editor("js0", ["<js0-1>"], text)
        run.editor("py0", ["<py0-1>", "<py0-2>"], text)
        report = run.check()
        assert report["missing_tokens"] == 1 and report["diverged_files"] == 0
        (row,) = report["details"]["missing_tokens"]["rows"]
        assert (row["client"], row["token"]) == ("py0", "<py0-2>")

    def test_a_duplicated_token_is_reported(self, tmp_path: Path) -> None:
        """A token twice in one text counts once, with the file and the view it is in."""
        run = Run(tmp_path)
        text = "<js0-1>\n<py0-1>\n<js0-1>\n"
        run.editor("js0", ["<js0-1>"], text)
        run.editor("py0", ["<py0-1>"], text)
        report = run.check()
        assert report["duplicated_tokens"] == 1
        (row,) = report["details"]["duplicated_tokens"]["rows"]
        assert row["token"] == "<js0-1>" and len(row["where"]) == 2
        assert report["missing_tokens"] == 0

    def test_a_file_that_differs_between_two_clients_has_diverged(self, tmp_path: Path) -> None:
        """Same tokens in another order is still a divergence (CRDTs converge to one text)."""
        run = Run(tmp_path)
        run.editor("js0", ["<js0-1>"], "<js0-1>\n<py0-1>\n")
        run.editor("py0", ["<py0-1>"], "<py0-1>\n<js0-1>\n")
        report = run.check()
        assert report["diverged_files"] == 1 and report["missing_tokens"] == 0
        (row,) = report["details"]["diverged_files"]["rows"]
        assert row["path"] == SHARED and row["same_tokens_other_order"] is True
        assert sorted(s for g in row["groups"] for s in g["sources"]) == ["js0", "py0"]

    def test_a_client_not_connected_at_the_end_is_stuck(self, tmp_path: Path) -> None:
        """Its final says disconnected: stuck, even though its text agrees."""
        run = Run(tmp_path)
        healthy(run)
        run.lines["py0"].insert(-1, run.lines["py0"][0] | {"t": T0 + 55, "ev": "disconnected"})
        run.lines["py0"][-1]["connected"] = False
        report = run.check()
        assert counts(report) == ZERO | {"stuck_clients": 1}
        assert report["details"]["stuck_clients"]["rows"][0]["client"] == "py0"

    def test_a_client_without_a_final_state_is_stuck(self, tmp_path: Path) -> None:
        """A history cut short (no final line, a torn last line) is stuck, and still read."""
        run = Run(tmp_path)
        healthy(run)
        run.lines["js0"].pop()
        report = run.check()
        assert report["stuck_clients"] == 1
        (row,) = report["details"]["stuck_clients"]["rows"]
        assert row["client"] == "js0" and "no final" in row["why"]
        with open(tmp_path / "clients" / "js0.jsonl", "a") as out:
            out.write('{"t": 1800000061, "client": "js0", "ev": "ins')
        again = check(tmp_path, s3=None, owner_bound_s=2.0)
        assert again["stuck_clients"] == 1
        assert again["details"]["inputs"]["malformed_lines"] == 1

    def test_tokens_are_found_whole_and_counted(self) -> None:
        assert tokens("<a-1>\nx<b-2>\n<a-1>\n<\n<c 3>") == ["<a-1>", "<b-2>", "<a-1>"]


class TestLiveOwners:
    @staticmethod
    def samples(worker: str, live_from: float, live_to: float, until: float = 20) -> list[Any]:
        """Every 0.25 s from 0 to ``until``; the session is live in [live_from, live_to]."""
        rows = []
        for i in range(int(until / 0.25) + 1):
            t = T0 + i * 0.25
            live = [SESSION] if live_from <= i * 0.25 <= live_to else []
            rows.append({"t": t + 0.01, "sent": t, "worker": worker, "ok": True, "live": live})
        return rows

    def test_two_workers_serving_one_session_past_the_bound_count_two(self, tmp_path: Path) -> None:
        """w0 and w1 both list the session for 5 s: max_live_owners 2, the episode named."""
        run = Run(tmp_path)
        healthy(run)
        run.jsonl("owners.jsonl", self.samples("w0", 0, 10) + self.samples("w1", 5, 20))
        report = run.check(bound=2.0)
        assert report["max_live_owners"] == 2 and report["ok"] is False
        (episode,) = report["details"]["max_live_owners"]["episodes"]["rows"]
        assert episode["session"] == SESSION and episode["workers"] == ["w0", "w1"]
        assert 4.5 <= episode["duration_s"] <= 5

    def test_a_short_hand_off_overlap_is_not_two_owners(self, tmp_path: Path) -> None:
        """w0 still lists it for 0.75 s after w1 took it: a hand-off, under the bound."""
        run = Run(tmp_path)
        healthy(run)
        run.jsonl("owners.jsonl", self.samples("w0", 0, 10.75) + self.samples("w1", 10, 20))
        report = run.check(bound=2.0)
        assert report["max_live_owners"] == 1 and report["ok"] is True
        assert report["details"]["max_live_owners"]["short_overlaps"] == 1

    def test_an_unanswered_sample_breaks_a_listing(self) -> None:
        """A worker that did not answer is not assumed live: no overlap through its silence."""
        w0 = self.samples("w0", 0, 20)
        for row in w0[8:60]:  # 2 s to 15 s: frozen, its samples fail
            row.update(ok=False, live=[])
        w1 = self.samples("w1", 4, 13)
        assert live_owners(w0 + w1, 2.0)["max_live_owners"] == 1

    def test_three_workers_at_once(self) -> None:
        rows = self.samples("w0", 0, 20) + self.samples("w1", 2, 20) + self.samples("w2", 4, 9)
        assert live_owners(rows, 2.0)["max_live_owners"] == 3


class TestRecovery:
    def test_from_the_heal_until_the_affected_clients_edit_again(self) -> None:
        """An editor out from 9 s to 12.5 s, a fault healed at 10 s: 2.5 s. A later fault that
        touched nobody has no figure."""
        events = [
            {"t": 1.0, "ev": "synced"},
            {"t": 9.0, "ev": "disconnected", "code": 1012},
            {"t": 12.5, "ev": "synced"},
        ]
        faults = [
            {"id": "f1", "kind": "kill", "target": "w0", "start": 8.0, "end": 10.0},
            {"id": "f2", "kind": "delay", "target": "r1", "start": 30.0, "end": 40.0},
        ]
        result = recovery(faults, {"py0": ("yjs-py", events)}, run_end=60.0)
        assert result["figures"] == {"p50": 2.5, "p99": 2.5, "max": 2.5, "n": 1}
        assert result["faults"][0]["affected"] == ["py0"]
        assert result["faults"][1]["recovery_s"] is None

    def test_an_outage_after_the_heal_belongs_to_the_fault_that_started_since(self) -> None:
        """Out at 11 s: within 5 s of the first fault's heal (10 s), but a second fault began
        at 10.5 s, so it is the second's alone; one at 10.2 s is charged to both."""
        late = [{"t": 11.0, "ev": "disconnected"}, {"t": 14.0, "ev": "synced"}]
        early = [{"t": 10.2, "ev": "disconnected"}, {"t": 13.0, "ev": "synced"}]
        faults = [
            {"kind": "loss", "target": "client", "start": 5.0, "end": 10.0},
            {"kind": "storage_restart", "target": "storage", "start": 10.5, "end": 12.0},
        ]
        result = recovery(faults, {"js0": ("yjs-js", late)}, run_end=60.0)
        assert [row["recovery_s"] for row in result["faults"]] == [None, 2.0]
        result = recovery(faults, {"js0": ("yjs-js", early)}, run_end=60.0)
        assert [row["recovery_s"] for row in result["faults"]] == [3.0, 1.0]

    def test_a_json_client_is_back_once_rejoined_and_a_slow_ack_is_an_outage(self) -> None:
        """Disconnected until it joined again; an ack that took longer than the stall bound
        (storage away, the connection up) is an outage from its send."""
        events = [
            {"t": 5.0, "ev": "disconnected"},
            {"t": 6.0, "ev": "synced"},
            {"t": 7.0, "ev": "send", "req": 3},
            {"t": 7.2, "ev": "ack", "req": 3},
            {"t": 20.0, "ev": "send", "req": 4},
            {"t": 26.0, "ev": "ack", "req": 4},
            {"t": 30.0, "ev": "send", "req": 5},
            {"t": 30.1, "ev": "error", "req": 5, "error": "Failed to apply file operation"},
            {"t": 31.0, "ev": "send", "req": 6},
            {"t": 31.1, "ev": "ack", "req": 6},
        ]
        spans = outages("json", events, stall_s=2.0)
        assert [(o.start, o.end) for o in spans] == [(5.0, 6.0), (20.0, 26.0), (30.1, 31.1)]
        faults = [{"kind": "storage_restart", "target": "storage", "start": 21.0, "end": 24.0}]
        result = recovery(faults, {"json0": ("json", events)}, run_end=60.0)
        assert result["figures"]["max"] == 2.0

    def test_an_outage_that_never_ends_is_unrecovered(self) -> None:
        events = [{"t": 1.0, "ev": "synced"}, {"t": 11.0, "ev": "disconnected"}]
        faults = [{"kind": "partition", "target": "client<->r0", "start": 10.0, "end": 20.0}]
        result = recovery(faults, {"js0": ("yjs-js", events)}, run_end=50.0)
        assert result["faults"][0]["unrecovered"] == ["js0"]
        assert result["figures"]["max"] == 30.0

    def test_the_report_counts_injected_faults_by_kind(self, tmp_path: Path) -> None:
        run = Run(tmp_path)
        healthy(run)
        fault = {"kind": "kill", "target": "w1", "start": T0 + 5, "end": T0 + 6, "detail": {}}
        failed = fault | {"kind": "stop", "detail": {"error": "no such process"}}
        run.jsonl("faults.jsonl", [fault, fault | {"kind": "partition"}, failed])
        report = run.check()
        assert report["faults"] == {"kill": 1, "partition": 1}
        assert report["details"]["faults_not_injected"]["total"] == 1
        assert report["recovery_s"]["n"] == 0  # nobody was disconnected


def _updates(*pieces: str) -> list[bytes]:
    """One editor appending ``pieces`` in turn: an incremental Yjs update per piece."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    updates = []
    for piece in pieces:
        before = doc.get_state()
        text.insert(len(str(text)), piece)
        updates.append(doc.get_update(before))
    return updates


async def _store_session(
    s3: dict[str, Any], parts: list[list[tuple[str, bytes]]], session: str = SESSION
) -> None:
    """Writes each part as one segment with the worker's own session store, compacting after
    the first (so storage holds a snapshot and segments)."""
    from worker.storage.minio import MinioStore
    from worker.storage.session_store import SessionStore

    store = MinioStore(**s3)
    try:
        sessions = SessionStore(store, "w-test")
        for i, part in enumerate(parts):
            await sessions.append_updates(session, part)
            if i == 0:
                await sessions.compact(session)
    finally:
        await store.aclose()


@pytest.mark.s3
class TestStorage:
    @pytest.fixture
    def s3(self, s3_server: S3Server) -> dict[str, Any]:
        kwargs: dict[str, Any] = s3_server.store_kwargs(f"chk-{uuid.uuid4().hex[:12]}")
        return kwargs

    async def test_stored_state_is_read_back_and_agrees(
        self, tmp_path: Path, s3: dict[str, Any]
    ) -> None:
        """Snapshot + segments written by the worker's store decode to the clients' text."""
        run = Run(tmp_path)
        healthy(run)
        first, second = _updates("<js0-1>\n<json0-1>\n", "<py0-1>\n<py0-2>\n")
        (own,) = _updates("<json0-2>\n")
        await _store_session(s3, [[(SHARED, first)], [(SHARED, second), ("own/json0-2.txt", own)]])
        report = run.check(s3=s3)
        assert counts(report) == ZERO and report["ok"] is True
        storage = report["details"]["storage"]
        assert storage["checked"] is True and storage["objects"] >= 1

    async def test_an_acknowledged_write_missing_from_storage_is_lost(
        self, tmp_path: Path, s3: dict[str, Any]
    ) -> None:
        """Every client has <json0-1>, storage does not: lost in storage, and diverged."""
        run = Run(tmp_path)
        text = healthy(run)
        (without,) = _updates(text.replace("<json0-1>\n", ""))
        (own,) = _updates("<json0-2>\n")
        await _store_session(s3, [[(SHARED, without)], [("own/json0-2.txt", own)]])
        report = run.check(s3=s3)
        assert report["lost"] == 1 and report["diverged_files"] == 1
        (row,) = report["details"]["lost"]["rows"]
        assert row["token"] == "<json0-1>" and row["missing_in"] == ["storage"]

    async def test_a_session_absent_from_storage_loses_everything(
        self, tmp_path: Path, s3: dict[str, Any]
    ) -> None:
        """The bucket exists (another session is stored), this session has no object."""
        run = Run(tmp_path)
        healthy(run)
        (other,) = _updates("<x-1>\n")
        await _store_session(s3, [[(SHARED, other)]], session="another-session")
        report = run.check(s3=s3)
        assert report["lost"] == 2 and report["missing_tokens"] == 3
        assert report["details"]["storage"]["objects"] == 0

    def test_unreachable_storage_fails_the_check(self, tmp_path: Path) -> None:
        """Nothing listens there: the report says so and is not ok (never "nothing lost")."""
        run = Run(tmp_path)
        healthy(run)
        s3 = {"endpoint": "127.0.0.1", "port": 9, "bucket": "b", "access_key": "a"}
        report = run.check(s3=s3 | {"secret_key": "s", "secure": False})
        assert report["ok"] is False and "error" in report["details"]["storage"]


class TestIndependence:
    def test_the_checker_loads_nothing_of_the_system_under_test(self, tmp_path: Path) -> None:
        """Importing the checker and running it on a run directory loads no worker, router,
        contract or ops module (in a fresh interpreter, so nothing else loaded them)."""
        run = Run(tmp_path)
        healthy(run)
        run.check()
        probe = (
            "import sys\n"
            "from bench.chaos.checker import main\n"
            "main([sys.argv[1], '--json'])\n"
            f"loaded = {{m.split('.')[0] for m in sys.modules}} & {FIRST_PARTY!r}\n"
            "print(sorted(loaded), file=sys.stderr)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["ok"] is True
        assert out.stderr.strip() == "[]"

    def test_the_checker_modules_import_no_first_party_package(self) -> None:
        """Statically too: bench/chaos/{checker,stored,owners,recovery}.py import only each
        other and third-party code."""
        allowed = {f"bench.chaos.{name}" for name in CHECKER_MODULES}
        for name in CHECKER_MODULES:
            path = ROOT / "bench" / "chaos" / f"{name}.py"
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    assert node.level == 0, f"{name}.py: relative import"
                    modules = [node.module or ""]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    assert top not in FIRST_PARTY | {"tests"}, f"{name}.py imports {module}"
                    if top == "bench":
                        assert module in allowed, f"{name}.py imports {module}"

    def test_the_command_line_reports_and_fails(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        run = Run(tmp_path)
        healthy(run, py="<js0-1>\n<json0-1>\n<py0-1>\n<py0-2>\n<py0-2>\n")
        run.check()
        assert main([str(tmp_path), "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["duplicated_tokens"] == 1
        assert main([str(tmp_path)]) == 1
        assert "FAILED" in capsys.readouterr().out
