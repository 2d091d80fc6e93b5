"""One state, two views: the seed's file operations as CRDT edits of the files' documents.

``create``/``update`` carry a whole new content. It becomes the smallest edits against the text
*this client last saw* (its shadow: a replica of the document taken when it last read or wrote
the file), made on the shadow and merged into the live document as a Yjs update. So an editor's
concurrent typing, which the JSON client never saw, is neither deleted nor moved. A client with
no shadow for a file (it never read it) overwrites it. ``delete``/``rename`` change the index
document (and empty or move the content) so every view sees the same workspace.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from pycrdt import Doc, Text

from contract.paths import PathRefused, check_path, check_prefix

from .session import Session

# Above this many differing characters, a character diff costs more than it saves.
_DIFF_LIMIT = 20_000


class FileOpError(ValueError):
    """A file operation is malformed; ``str()`` is the reason for the client."""


def apply_text(text: Text, new: str) -> None:
    """Edits ``text`` into ``new`` touching only the characters that differ."""
    old = str(text)
    if old == new:
        return
    start = 0
    limit = min(len(old), len(new))
    while start < limit and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old -= 1
        end_new -= 1
    a, b = old[start:end_old], new[start:end_new]
    if max(len(a), len(b)) > _DIFF_LIMIT:
        ops = [("replace", 0, len(a), 0, len(b))]
    else:
        ops = [
            op
            for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
            if op[0] != "equal"
        ]
    # Apply right to left so earlier offsets stay valid.
    for tag, i1, i2, j1, j2 in reversed(ops):
        if tag in ("replace", "delete"):
            del text[start + i1 : start + i2]
        if tag in ("replace", "insert"):
            text.insert(start + i1, b[j1:j2])


class Shadows:
    """A JSON client's replicas of the files it last read or wrote (bounded, LRU)."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._docs: OrderedDict[str, Doc[Any]] = OrderedDict()

    def get(self, path: str) -> Doc[Any] | None:
        doc = self._docs.get(path)
        if doc is not None:
            self._docs.move_to_end(path)
        return doc

    def remember(self, path: str, doc: Doc[Any]) -> None:
        self._docs[path] = doc
        self._docs.move_to_end(path)
        while len(self._docs) > self.limit:
            self._docs.popitem(last=False)

    def forget(self, path: str) -> None:
        self._docs.pop(path, None)


def apply_operation(
    session: Session, user: str, op: dict[str, Any], shadows: Shadows | None = None
) -> int:
    """Applies one seed ``fileOperation``; returns the bytes of content it wrote."""
    shadows = shadows if shadows is not None else Shadows(0)
    kind = op.get("type")
    if kind in ("create", "update"):
        path = _path(op.get("path"))
        if session.binary_entry(path) is not None:
            raise FileOpError(f"{path!r} is a binary file; it cannot be written as text")
        content = op.get("content")
        if content is None:
            content = "" if kind == "create" else None
        if content is not None and not isinstance(content, str):
            raise FileOpError("'content' must be a string")
        if content is not None:
            _admit(session, user, path, content)
            shadow = shadows.get(path) if session.has_file(path) else None
            with session.local_edit(path, user, shadow) as doc:
                apply_text(doc.get("content", type=Text), content)
            shadows.remember(path, shadow or session.copy_doc(path))
        session.ensure_listed(path, user)
        nbytes = len(content.encode()) if content else 0
        session.log(kind, user, path, nbytes)
        return nbytes
    if kind == "delete":
        path = _path(op.get("path"))
        _delete(session, user, path)
        shadows.forget(path)
        session.log("delete", user, path, 0)
        return 0
    if kind == "rename":
        old = _path(op.get("oldPath") or op.get("path"))
        new = _path(op.get("newPath"))
        if old == new:
            raise FileOpError("'oldPath' and 'newPath' are the same")
        if not session.has_file(old):
            raise FileOpError(f"no file at {old!r} to rename")
        binary = session.binary_entry(old)
        if binary is not None:
            session.list_entry(new, dict(binary), user)
            session.unlist(old, user)
            session.log("rename", user, new, int(binary.get("size", 0)), oldPath=old)
            return 0
        content = str(session.text(old))
        with session.local_edit(new, user) as doc:
            apply_text(doc.get("content", type=Text), content)
        _delete(session, user, old)
        shadows.forget(old)
        shadows.remember(new, session.copy_doc(new))
        session.ensure_listed(new, user)
        session.log("rename", user, new, len(content.encode()), oldPath=old)
        return len(content.encode())
    raise FileOpError(f"unknown file operation {kind!r}; expected create, update, delete or rename")


def _admit(session: Session, user: str, path: str, content: str) -> None:
    """The limits, before anything is edited: the content counts as the update, and the
    documents grow by what it adds to the text it replaces (a shorter text never grows them).
    A rename or a delete is never refused: it moves or removes what is there."""
    new, old = _sizes(session, path, content)
    session.admit(path, new, user, lambda: new > old, growth=max(0, new - old))


def admit_texts(session: Session, user: str, texts: Mapping[str, str]) -> None:
    """The limits for texts written together (a restore), before any is edited, so the write
    is refused whole or not at all: each text is an update of its own (``MAX_UPDATE_BYTES``),
    and the documents grow by what they all add (``MAX_DOC_BYTES``)."""
    growth = 0
    for path, content in texts.items():
        new, old = _sizes(session, path, content)
        session.admit(path, new, user, lambda: False)  # its own size only
        growth += max(0, new - old)
    if growth:
        session.admit(next(iter(texts)), 0, user, lambda: True, growth=growth)


def _sizes(session: Session, path: str, content: str) -> tuple[int, int]:
    """The new text's bytes and those of the text it replaces (0 for a new file)."""
    old = len(str(session.text(path)).encode()) if session.has_file(path) else 0
    return len(content.encode()), old


def _delete(session: Session, user: str, path: str) -> None:
    if not session.has_file(path):
        return
    with session.local_edit(path, user) as doc:
        text = doc.get("content", type=Text)
        if len(str(text)):
            del text[0 : len(str(text))]
    session.unlist(path, user)


def list_files(session: Session, prefix: object) -> list[str]:
    base = check_prefix(prefix)
    paths = session.file_paths()
    if not base:
        return paths
    return [p for p in paths if p.startswith(base + "/")]


def read_file(session: Session, path: object, shadows: Shadows | None = None) -> str | None:
    """A text file's content; None for a missing or a binary file (see ``binary_entry``)."""
    checked = check_path(path)
    if not session.has_file(checked) or session.binary_entry(checked) is not None:
        return None
    if shadows is not None:
        shadows.remember(checked, session.copy_doc(checked))
    return str(session.text(checked))


def _path(raw: object) -> str:
    try:
        return check_path(raw)
    except PathRefused as exc:
        raise FileOpError(f"invalid path: {exc}") from None
