"""Long histories in storage: stored bytes, cold load time and memory after a SIGKILL-like stop.

``python bench/history.py [--keystrokes N] [--per-segment K] [--policy size|count] [--dir D]``

Generates a typing history (one keystroke per update: typing and backspaces at a cursor that
jumps now and then), writes it through ``SessionStore`` as group-committed
segments of K keystrokes, compacting as a live worker's flusher decides (``size``: segments
since the last snapshot outweigh it, floor 64 KiB, or 64 segments; ``count``: every 64 segments,
the rule before issue 21), and stops without an unload (as after SIGKILL). Then, each in a
fresh process: a cold load (``SessionStore.load`` + the Doc a session builds from it) with its
time, peak and final RSS; and a live process (the Doc that typing built) with its RSS.

Whichever ``worker`` package is importable is measured, so the rule before issue 21 is
``PYTHONPATH=/path/to/older/tree python bench/history.py --policy count``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from worker.storage import LocalStore, SessionStore, decode_segment, encode_segment

SESSION = "history"
DOC = "a.txt"


def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident memory now (``VmHWM``: its peak; unlike ``ru_maxrss``, which
    Linux carries over from the parent through fork and exec, it starts fresh at exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def generate(keystrokes: int, seed: int) -> tuple[list[bytes], str]:
    """An editor's keystrokes: typing at a cursor, backspaces (about a third of keystrokes, so
    about half of what is typed is deleted again, like the real trace of issue 21), and now
    and then a jump of the cursor elsewhere in the text."""
    rng = random.Random(seed)
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    updates: list[bytes] = []
    # What an editor sends: each transaction's own update (a diff against a state vector
    # would carry the whole delete set every time).
    doc.observe(lambda event: updates.append(event.update))
    length = cursor = 0
    for i in range(keystrokes):
        if length and rng.random() < 0.01:
            cursor = rng.randrange(length + 1)
        if cursor and rng.random() < 0.3:
            del text[cursor - 1 : cursor]
            cursor -= 1
            length -= 1
        else:
            text.insert(cursor, rng.choice("etaoin shrdlu\n"))
            cursor += 1
            length += 1
        if i % 20_000 == 19_999:
            print(f"  generated {i + 1} keystrokes", file=sys.stderr)
    return updates, str(text)


def history(path: Path, keystrokes: int, seed: int) -> tuple[list[bytes], str]:
    """The generated history, cached in ``path`` (generating 100k keystrokes takes a minute)."""
    if path.exists():
        entries = decode_segment(path.read_bytes())
        return [u for _, u in entries[1:]], entries[0][1].decode()
    updates, text = generate(keystrokes, seed)
    path.write_bytes(encode_segment([("text", text.encode()), *(("", u) for u in updates)]))
    return updates, text


async def write(root: Path, updates: list[bytes], per_segment: int, policy: str) -> dict[str, Any]:
    from worker.flusher import merge_many

    sessions = SessionStore(LocalStore(root), "bench")
    segments_since = 0
    updates_bytes = snapshot_bytes = compactions = 0
    started = time.perf_counter()
    for i in range(0, len(updates), per_segment):
        key = await sessions.append_updates(
            SESSION, [(DOC, merge_many(updates[i : i + per_segment]))], merged=True
        )
        updates_bytes += (root / key).stat().st_size
        segments_since += 1
        due = segments_since >= 64 or (
            policy == "size" and updates_bytes > max(64 * 1024, snapshot_bytes)
        )
        if due:
            result = await sessions.compact(SESSION)
            compactions += 1
            segments_since = 0
            if result.snapshot_key is not None:
                snapshot_bytes = (root / result.snapshot_key).stat().st_size
                updates_bytes = 0
    return {"write_s": round(time.perf_counter() - started, 2), "compactions": compactions}


def stored(root: Path) -> dict[str, int]:
    base = root / "sessions" / SESSION
    out = {}
    for kind in ("updates", "snapshots"):
        files = [p for p in (base / kind).glob("*") if p.is_file()]
        out[f"{kind}_objects"] = len(files)
        out[f"{kind}_bytes"] = sum(p.stat().st_size for p in files)
    return out


async def cold_load(root: Path) -> dict[str, Any]:
    """What a worker does when a client joins a session nobody holds: load, then its Doc."""
    base = rss_kib()
    started = time.perf_counter()
    loaded = await SessionStore(LocalStore(root), "loader").load(SESSION)
    loaded_s = time.perf_counter() - started
    doc: Doc[Any] = Doc()
    doc.apply_update(loaded.docs.pop(DOC))
    total_s = time.perf_counter() - started
    del loaded
    gc.collect()
    report = {
        "load_s": round(loaded_s, 3),
        "load_and_doc_s": round(total_s, 3),
        "rss_base_mib": round(base / 1024, 1),
        "rss_peak_mib": round(rss_kib("VmHWM") / 1024, 1),
        "rss_after_mib": round(rss_kib() / 1024, 1),
    }
    report["text_chars"] = len(str(doc.get("content", type=Text)))
    return report


def live(path: Path) -> dict[str, Any]:
    """The Doc a live session ends up with after the typing (every update applied in turn)."""
    entries = decode_segment(path.read_bytes())
    doc: Doc[Any] = Doc()
    for _, update in entries[1:]:
        doc.apply_update(update)
    del entries
    gc.collect()
    return {
        "doc_state_bytes": len(doc.get_update()),
        "rss_mib": round(rss_kib() / 1024, 1),
    }


def child(mode: str, arg: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, __file__, f"--child-{mode}", str(arg)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keystrokes", type=int, default=100_000)
    parser.add_argument("--per-segment", type=int, default=3000)
    parser.add_argument("--policy", choices=("size", "count"), default="size")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/collab-history-bench"))
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--child-load", type=Path)
    parser.add_argument("--child-live", type=Path)
    args = parser.parse_args()
    if args.child_load:
        print(json.dumps(asyncio.run(cold_load(args.child_load))))
        return
    if args.child_live:
        print(json.dumps(live(args.child_live)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    cache = args.dir / f"cursor-{args.keystrokes}-{args.seed}.bin"
    updates, text = history(cache, args.keystrokes, args.seed)
    root = args.dir / f"store-{args.policy}-{os.getpid()}"
    report: dict[str, Any] = {"keystrokes": len(updates), "text_chars": len(text)}
    report.update(asyncio.run(write(root, updates, args.per_segment, args.policy)))
    del updates
    report.update(stored(root))
    live_report = child("live", cache)
    report["doc_state_bytes"] = live_report["doc_state_bytes"]
    report["stored_ratio"] = round(
        (report["updates_bytes"] + report["snapshots_bytes"]) / report["doc_state_bytes"], 2
    )
    report["cold"] = child("load", root)
    report["live_rss_mib"] = live_report["rss_mib"]
    assert report["cold"]["text_chars"] == len(text), "the cold load lost text"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
