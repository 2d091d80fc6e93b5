"""Git over dulwich: turn a session's files into commits and packs. Blocking; call in a thread.

The only module that imports dulwich. It knows nothing of storage or sessions: it takes the
files (path → bytes) and the parent commits, writes the new objects into a local bare
repository (the cache of the session's history under WORKSPACE_DIR), and returns them as one
pack, so that the caller can store it as an immutable object before it moves the branch ref.
Objects first, ref last: a commit is in storage whole or not at all.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.index import build_index_from_tree
from dulwich.object_format import DEFAULT_OBJECT_FORMAT
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree
from dulwich.pack import write_pack_objects
from dulwich.refs import Ref
from dulwich.repo import Repo

EXCLUDED_PREFIXES = (".collaboration/", ".git/")
FILE_MODE = 0o100644
DIR_MODE = 0o040000
MAX_LISTED = 5


class CommitterError(RuntimeError):
    """A commit could not be made; ``str()`` says why."""


@dataclass(frozen=True)
class Person:
    name: str
    email: str

    @classmethod
    def for_user(cls, user_id: str) -> Person:
        """A git identity for a collaboration user id (ids are not e-mail addresses)."""
        clean = "".join(c if c.isalnum() or c in "._-" else "-" for c in user_id)[:64] or "user"
        return cls(user_id, f"{clean}@users.collab.invalid")

    @property
    def identity(self) -> bytes:
        return f"{self.name} <{self.email}>".encode()


@dataclass(frozen=True)
class CommitResult:
    sha: str
    pack: bytes  # every object the commit added, as one pack (empty when nothing changed)
    objects: int
    changed: tuple[str, ...] = field(default_factory=tuple)


def message(author: str, changed: Sequence[str], coauthors: Iterable[Person] = ()) -> str:
    """The seed's message: ``Auto-commit by user X``, a blank line, ``Changes: a, b ... and N
    more``; every other user who edited is a ``Co-authored-by:`` trailer."""
    listed = ", ".join(changed[:MAX_LISTED])
    more = len(changed) - MAX_LISTED
    text = f"Auto-commit by user {author}\n\nChanges: {listed}"
    if more > 0:
        text += f" and {more} more"
    trailers = [f"Co-authored-by: {p.name} <{p.email}>" for p in coauthors]
    if trailers:
        text += "\n\n" + "\n".join(trailers)
    return text + "\n"


def committable(path: str) -> bool:
    return not any(path.startswith(p) or path + "/" == p for p in EXCLUDED_PREFIXES)


def open_repo(path: Path) -> Repo:
    """The local bare repository caching a session's history (created when missing)."""
    if (path / "objects").is_dir():
        return Repo(str(path))
    path.mkdir(parents=True, exist_ok=True)
    return Repo.init_bare(str(path))


def add_pack(repo: Repo, data: bytes) -> None:
    """Adds a pack fetched from storage to the local repository (idempotent)."""
    f, commit, abort = repo.object_store.add_pack()
    try:
        f.write(data)
    except BaseException:
        abort()
        raise
    commit()


def build_tree(files: Mapping[str, bytes]) -> tuple[ObjectID, list[ShaFile]]:
    """The root tree id for ``files`` and every blob and tree object it is made of."""
    objects: list[ShaFile] = []
    root: dict[str, object] = {}
    for path, data in files.items():
        if not committable(path):
            continue
        parts = path.split("/")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CommitterError(f"{path!r} needs {part!r} to be a directory, it is a file")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise CommitterError(f"{path!r} is both a file and a directory")
        blob = Blob.from_string(data)
        objects.append(blob)
        node[parts[-1]] = blob.id

    def write(node: dict[str, object]) -> ObjectID:
        tree = Tree()
        for name, value in node.items():
            if isinstance(value, dict):
                tree.add(name.encode(), DIR_MODE, write(value))
            else:
                assert isinstance(value, bytes)
                tree.add(name.encode(), FILE_MODE, ObjectID(value))
        objects.append(tree)
        return tree.id

    return write(root), objects


def tree_files(repo: Repo, tree_id: ObjectID, prefix: str = "") -> dict[str, bytes]:
    """path → blob id of every file under ``tree_id``."""
    found: dict[str, bytes] = {}
    tree = repo.object_store[tree_id]
    assert isinstance(tree, Tree)
    for entry in tree.items():
        name = prefix + entry.path.decode()
        if entry.mode == DIR_MODE:
            found.update(tree_files(repo, entry.sha, name + "/"))
        else:
            found[name] = entry.sha
    return found


def changed_paths(repo: Repo, before: ObjectID | None, after: ObjectID) -> list[str]:
    """Paths added, modified or deleted between two trees, sorted."""
    old = tree_files(repo, before) if before is not None else {}
    new = tree_files(repo, after)
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


def commit(
    repo: Repo,
    parents: Sequence[str],
    files: Mapping[str, bytes],
    author: Person,
    coauthors: Iterable[Person] = (),
    when: float | None = None,
) -> CommitResult | None:
    """A commit of ``files`` on top of ``parents``; None when the tree is the first parent's.

    With several parents it is a merge whose tree is ``files``: the documents already merged
    every edit (CRDT), so the live state is the resolution.
    """
    tree_id, objects = build_tree(files)
    store = repo.object_store
    first = ObjectID(parents[0].encode()) if parents else None
    base_tree: ObjectID | None = None
    if first is not None:
        parent = store[first]
        assert isinstance(parent, Commit)
        base_tree = parent.tree
        if len(parents) == 1 and base_tree == tree_id:
            return None
    new = [o for o in _unique(objects) if o.id not in store]
    for obj in new:
        store.add_object(obj)
    changed = changed_paths(repo, base_tree, tree_id)
    c = Commit()
    c.tree = tree_id
    c.parents = [ObjectID(p.encode()) for p in parents]
    c.author = c.committer = author.identity
    stamp = int(when if when is not None else time.time())
    c.author_time = c.commit_time = stamp
    c.author_timezone = c.commit_timezone = 0
    c.encoding = b"UTF-8"
    c.message = message(author.name, changed, coauthors).encode()
    store.add_object(c)
    new.append(c)
    buffer = io.BytesIO()
    write_pack_objects(buffer, new, DEFAULT_OBJECT_FORMAT)
    return CommitResult(c.id.decode(), buffer.getvalue(), len(new), tuple(changed))


def _unique(objects: Iterable[ShaFile]) -> list[ShaFile]:
    seen: set[bytes] = set()
    out = []
    for obj in objects:
        if obj.id not in seen:
            seen.add(obj.id)
            out.append(obj)
    return out


def pack_repository(path: Path) -> tuple[bytes, str | None, int]:
    """Every object of the git repository at ``path`` as one pack, its HEAD commit (None for
    a repository without commits), and the number of objects."""
    repo = Repo(str(path))
    try:
        store = repo.object_store
        objects = [store[sha] for sha in store]
        try:
            head: str | None = repo.head().decode()
        except KeyError:
            head = None
        buffer = io.BytesIO()
        write_pack_objects(buffer, objects, DEFAULT_OBJECT_FORMAT)
        return buffer.getvalue(), head, len(objects)
    finally:
        repo.close()


def checkout(dest: Path, packs: Iterable[bytes], head: str, files: Mapping[str, bytes]) -> None:
    """A work tree at ``dest`` (empty): the history from ``packs``, branch ``main`` at ``head``
    with its index, then the files set to ``files`` (the live state), so ``git status`` shows
    exactly what changed since the last commit."""
    repo = Repo.init(str(dest))
    try:
        for data in packs:
            add_pack(repo, data)
        repo.refs[Ref(b"refs/heads/main")] = ObjectID(head.encode())
        repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/main"))
        commit_obj = repo.object_store[ObjectID(head.encode())]
        assert isinstance(commit_obj, Commit)
        build_index_from_tree(repo.path, repo.index_path(), repo.object_store, commit_obj.tree)
        committed = tree_files(repo, commit_obj.tree)
    finally:
        repo.close()
    for path in committed.keys() - files.keys():
        (dest / path).unlink(missing_ok=True)
    for path, data in files.items():
        target = dest / path
        if target.is_file() and target.read_bytes() == data:
            continue  # untouched: its index entry stays valid
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


# --- reading history (the HTTP API's history, diff and restore) -----------------------------


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    email: str
    coauthors: tuple[str, ...]
    message: str
    time: int  # epoch seconds
    files: tuple[str, ...]  # changed against the first parent (all files for a root commit)


def _coauthors(text: str) -> tuple[str, ...]:
    found = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "co-authored-by":
            found.append(value.strip().rsplit(" <", 1)[0])
    return tuple(found)


def log(repo: Repo, head: str, limit: int = 100) -> list[CommitInfo]:
    """The commits reachable from ``head``, newest first (by commit time), at most ``limit``."""
    found: list[CommitInfo] = []
    for entry in repo.get_walker(include=[ObjectID(head.encode())], max_entries=limit):
        c = entry.commit
        parent_tree: ObjectID | None = None
        if c.parents:
            parent = repo.object_store[c.parents[0]]
            assert isinstance(parent, Commit)
            parent_tree = parent.tree
        author = c.author.decode("utf-8", "replace")
        name, _, email = author.partition(" <")
        text = c.message.decode("utf-8", "replace")
        found.append(
            CommitInfo(
                sha=c.id.decode(),
                author=name,
                email=email.rstrip(">"),
                coauthors=_coauthors(text),
                message=text,
                time=c.author_time,
                files=tuple(changed_paths(repo, parent_tree, c.tree)),
            )
        )
    return found


def files_at(repo: Repo, sha: str) -> dict[str, bytes]:
    """path → content of every file in commit ``sha``; KeyError when there is no such commit."""
    obj = repo.object_store[ObjectID(sha.encode())]
    if not isinstance(obj, Commit):
        raise KeyError(sha)
    found: dict[str, bytes] = {}
    for path, blob_id in tree_files(repo, obj.tree).items():
        blob = repo.object_store[ObjectID(blob_id)]
        assert isinstance(blob, Blob)
        found[path] = blob.data
    return found
