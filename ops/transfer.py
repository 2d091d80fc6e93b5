"""``collab import`` / ``collab export``: a directory (with its ``.git``) into storage as a
session, and a session back out as a working tree with its full history.

Import writes what a worker would have written: one Yjs document per text file (``Y.Text
"content"``), the index document listing every file, binary files as content-addressed blobs,
the repository's objects as one pack and its HEAD as the branch ref (``main``), and the
session's metadata (``isGitRepo``). Export loads the session like a worker does, checks out the
history and writes the live files over it, so ``git status`` shows what changed since the last
auto-commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from contract.paths import PathRefused, check_path
from worker import doc_schema, git_objects
from worker.storage import SessionMeta, SessionStore

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``."""

SKIPPED_DIRS = (".git", ".collaboration")
USER = "collab-import"


class TransferError(RuntimeError):
    """An import or export refused; ``str()`` names the cause and the fix."""


@dataclass(frozen=True)
class Transferred:
    texts: int
    binaries: int
    bytes: int
    git_objects: int
    head: str | None


def is_text(data: bytes) -> bool:
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _walk(root: Path) -> list[str]:
    paths = []
    refused = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in SKIPPED_DIRS or path.is_symlink() or not path.is_file():
            continue
        try:
            paths.append(check_path(rel.as_posix()))
        except PathRefused as exc:
            refused.append(f"{rel.as_posix()!r} ({exc})")
    if refused:
        raise TransferError(
            f"{len(refused)} path(s) cannot be session files: {', '.join(refused[:5])}"
            " — rename them, or move them out of the directory"
        )
    return paths


async def import_dir(
    store: SessionStore, session_id: str, source: Path, progress: Progress
) -> Transferred:
    if not await anyio.to_thread.run_sync(source.is_dir):
        raise TransferError(f"{source} is not a directory")
    if await store.session_exists(session_id):
        raise TransferError(
            f"session {session_id!r} already exists in storage; import under a new id"
        )
    paths = await anyio.to_thread.run_sync(_walk, source)
    texts: dict[str, str] = {}
    binaries: dict[str, dict[str, Any]] = {}
    total = 0
    now = int(time.time() * 1000)
    for done, path in enumerate(paths, 1):
        data = await anyio.to_thread.run_sync((source / path).read_bytes)
        total += len(data)
        if is_text(data):
            texts[path] = data.decode("utf-8")
        else:
            digest = await store.put_blob(session_id, data)
            binaries[path] = doc_schema.binary_entry(digest, len(data), USER, now)
        if done % 100 == 0 or done == len(paths):
            progress("files", done, len(paths))
    updates = doc_schema.new_documents(texts, binaries, USER, now)
    objects, head = 0, None
    git_dir = source / ".git"
    if git_dir.is_dir():
        progress("git history", 0, 1)
        pack, head, objects = await anyio.to_thread.run_sync(git_objects.pack_repository, git_dir)
        await store.append_pack(session_id, pack)
        progress("git history", 1, 1)
    # Documents first, then the ref, then the metadata that makes it a git session.
    await store.append_updates(session_id, updates, merged=True)
    if head is not None and not await store.swap_ref(session_id, head, None):
        raise TransferError(f"session {session_id!r} got a branch while importing; retry")
    await store.put_meta(session_id, SessionMeta.new(is_git_repo=git_dir.is_dir()))
    await store.append_log(
        session_id, [{"op": "import", "userId": USER, "bytes": total, "files": len(paths)}]
    )
    return Transferred(len(texts), len(binaries), total, objects, head)


def _usable_destination(dest: Path) -> bool:
    return not dest.exists() or (dest.is_dir() and not any(dest.iterdir()))


async def export_dir(
    store: SessionStore, session_id: str, dest: Path, progress: Progress
) -> Transferred:
    if not await anyio.to_thread.run_sync(_usable_destination, dest):
        raise TransferError(f"{dest} exists and is not an empty directory; pick a new one")
    if not await store.session_exists(session_id):
        raise TransferError(f"no session {session_id!r} in storage")
    loaded = await store.load(session_id)
    texts, binaries = doc_schema.stored_files(loaded.docs)
    files = {path: text.encode() for path, text in texts.items()}
    for done, (path, entry) in enumerate(sorted(binaries.items()), 1):
        files[path] = await store.get_blob(session_id, str(entry.get("sha256")))
        progress("binary files", done, len(binaries))
    progress("files", len(files), len(files))
    await anyio.to_thread.run_sync(lambda: dest.mkdir(parents=True, exist_ok=True))
    ref = await store.read_ref(session_id)
    objects = 0
    if ref is not None:
        packs = [await store.get_pack(key) for key in await store.list_packs(session_id)]
        progress("git history", 0, 1)
        await anyio.to_thread.run_sync(git_objects.checkout, dest, packs, ref.sha, files)
        progress("git history", 1, 1)
        objects = len(packs)
    else:

        def write() -> None:
            for path, data in files.items():
                (dest / path).parent.mkdir(parents=True, exist_ok=True)
                (dest / path).write_bytes(data)

        await anyio.to_thread.run_sync(write)
    total = sum(len(d) for d in files.values())
    return Transferred(len(texts), len(binaries), total, objects, ref[0] if ref else None)
