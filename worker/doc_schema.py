"""The shape of a session's documents, in one place.

A file is a Yjs document whose text is the ``Y.Text`` named ``content``; the session's index is
the document named ``""``, a ``Y.Map`` named ``files`` from path to an entry (``type`` "text",
or "binary" with the blob's ``sha256`` and ``size``; who listed it and when). The live session
(``worker.session``) and the offline tools (``collab import``/``export``, ``ops.transfer``)
build and read documents through this module only.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map, Text

INDEX_DOC = ""
CONTENT = "content"
FILES = "files"
EMPTY_UPDATE = b"\x00\x00"  # no structs, no deletions


def text_entry(by: str, created_ms: int) -> dict[str, Any]:
    return {"type": "text", "created": created_ms, "by": by}


def binary_entry(sha256: str, size: int, by: str, created_ms: int) -> dict[str, Any]:
    """A binary file: kept byte-exact as a content-addressed blob, listed by its digest."""
    return {"type": "binary", "sha256": sha256, "size": size, "created": created_ms, "by": by}


def is_binary(entry: object) -> bool:
    return isinstance(entry, dict) and entry.get("type") == "binary"


def new_documents(
    texts: dict[str, str], binaries: dict[str, dict[str, Any]], by: str, created_ms: int
) -> list[tuple[str, bytes]]:
    """The stored updates of a new session holding these files: each text file's document,
    then the index listing them all (``binaries``: path → ``binary_entry``)."""
    updates: list[tuple[str, bytes]] = []
    index: Doc[Any] = Doc()
    listing = index.get(FILES, type=Map)
    for path, text in texts.items():
        doc: Doc[Any] = Doc()
        doc.get(CONTENT, type=Text).insert(0, text)
        updates.append((path, doc.get_update()))
        listing[path] = text_entry(by, created_ms)
    for path, entry in binaries.items():
        listing[path] = entry
    updates.append((INDEX_DOC, index.get_update()))
    return updates


def stored_files(docs: dict[str, bytes]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(each text file's text, each binary file's entry) of a session's stored documents
    (``SessionStore.load``'s merged updates by document name)."""
    index: Doc[Any] = Doc()
    if INDEX_DOC in docs:
        index.apply_update(docs[INDEX_DOC])
    texts: dict[str, str] = {}
    binaries: dict[str, dict[str, Any]] = {}
    for path, entry in index.get(FILES, type=Map).items():
        if is_binary(entry):
            binaries[path] = dict(entry)
            continue
        doc: Doc[Any] = Doc()
        if path in docs:
            doc.apply_update(docs[path])
        texts[path] = str(doc.get(CONTENT, type=Text))
    return texts, binaries
