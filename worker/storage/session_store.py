"""Sessions over any Store: update segments, snapshots, merge-on-read, compaction, log, metadata.

Layout under ``sessions/{sessionId}/``::

    updates/{ms:013d}-{worker}-{seq:08d}-{rand}.seg     group-committed updates, never overwritten
    snapshots/{ms:013d}-{worker}-{seq:08d}-{rand}.snap  compaction output, one state per doc
    log/{ms:013d}-{worker}-{seq:08d}-{rand}.jsonl       operations log, JSON lines
    meta.json                                           the one mutable object (last writer wins)

The no-loss invariant rests on three rules, all enforced here once for every store:

1. Objects are immutable and their keys unique per writer (time, worker id, per-process sequence,
   random suffix), so a put never replaces anyone's data.
2. Compaction puts its snapshot *before* deleting, and deletes only the objects it read and
   merged.  So at every instant, the data of every deleted object is inside some existing
   snapshot.
3. Load lists ``updates/`` *before* ``snapshots/``.  A segment that vanished between the two
   listings was merged into a snapshot put before it was deleted, which the later listing sees
   (or a successor of it, by rule 2).  (A load's first listing is of the whole session, the
   ``Survey``: it lists ``snapshots/`` too, before ``updates/`` in key order, so those are
   ignored and ``snapshots/`` is listed again after it.)  A listed object that vanishes
   before it is read makes load re-list and try again; it never returns a state missing data.
   Only a worker that owns or owned a session compacts it (``worker.flusher``), so the load of
   a session nobody ever owned (``exclusive``) takes its one listing as complete.

Yjs merges are commutative, associative and idempotent, so merging an update twice (a segment and
a snapshot that already contains it, or two overlapping snapshots) is harmless.

A snapshot holds each document as the encoded state of a Doc with every input applied, not as
``merge_updates`` of the inputs: a Doc garbage-collects deleted content (a typing history keeps
one byte per deleted character, and a merge keeps every one of them), so its state is smaller
and much faster to load.  A Doc does not encode the deletions it holds back because it lacks the
content they delete (another writer's segment not yet seen); the snapshot adds the inputs' whole
delete set back to it, so it is exactly the merge's content (``_snapshot_doc``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread
from pycrdt import Doc, get_state, get_update, merge_updates

from contract.ids import is_name, validate_name, validate_session_id
from contract.timefmt import iso_time
from worker.storage.base import CorruptObject, StorageUnavailable, Store
from worker.storage.codec import decode_segment, encode_segment
from worker.storage.git_and_blobs import SessionHistory
from worker.storage.heap import release_free_memory

__all__ = [
    "CompactResult",
    "LoadedSession",
    "SessionMeta",
    "SessionStore",
    "Survey",
    "merge_many",
]

_SEQUENCE = itertools.count(1)  # per process, shared by every SessionStore in it
# Tells apart two processes that share a worker id (a restart, a misconfiguration): with the
# per-process sequence it makes every key unique without a random draw per object.
_PROCESS_TOKEN = secrets.token_hex(3)
_LOAD_ATTEMPTS = 8
_PARALLEL_REQUESTS = 16

UPDATES = "updates/"
SNAPSHOTS = "snapshots/"
LOG = "log/"
META = "meta.json"


@dataclass(frozen=True)
class SessionMeta:
    """What ``meta.json`` holds; serialized with the seed's camelCase names."""

    created: str
    last_active: str
    users: tuple[str, ...] = ()
    is_git_repo: bool = False

    @classmethod
    def new(cls, *, users: Iterable[str] = (), is_git_repo: bool = False) -> SessionMeta:
        now = iso_time()
        return cls(created=now, last_active=now, users=tuple(users), is_git_repo=is_git_repo)

    def to_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "lastActive": self.last_active,
            "users": list(self.users),
            "isGitRepo": self.is_git_repo,
        }

    @classmethod
    def from_json(cls, obj: object, key: str | None = None) -> SessionMeta:
        if not isinstance(obj, dict):
            raise CorruptObject(key, "metadata is not a JSON object")
        created, last_active = obj.get("created"), obj.get("lastActive")
        users, is_git = obj.get("users", []), obj.get("isGitRepo", False)
        if not isinstance(created, str) or not isinstance(last_active, str):
            raise CorruptObject(key, "metadata needs string 'created' and 'lastActive'")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise CorruptObject(key, "metadata 'users' must be a list of strings")
        if not isinstance(is_git, bool):
            raise CorruptObject(key, "metadata 'isGitRepo' must be a boolean")
        return cls(created=created, last_active=last_active, users=tuple(users), is_git_repo=is_git)


@dataclass
class LoadedSession:
    """A session's durable state: one merged Yjs update per doc ("" = the index document).

    ``stored``: bytes of the objects it was merged from, by kind (``updates``, ``snapshots``);
    ``log_bytes``: the bytes of its operations log when it was listed.
    """

    docs: dict[str, bytes]
    keys: list[str]
    meta: SessionMeta | None
    stored: dict[str, int] = field(default_factory=dict)
    log_bytes: int = 0


@dataclass(frozen=True)
class Survey:
    """One sized listing of everything under a session's prefix (``SessionStore.survey``):
    its segments, whether it has metadata, its log's bytes. A load starts from one, so a new
    session costs one listing where it took a metadata read and two listings."""

    prefix: str
    sizes: Mapping[str, int]

    @property
    def segments(self) -> list[str]:
        start = self.prefix + UPDATES
        return [k for k in self.sizes if k.startswith(start) and k.endswith(".seg")]

    @property
    def snapshots(self) -> list[str]:
        start = self.prefix + SNAPSHOTS
        return [k for k in self.sizes if k.startswith(start) and k.endswith(".snap")]

    @property
    def has_meta(self) -> bool:
        return self.prefix + META in self.sizes

    @property
    def log_bytes(self) -> int:
        start = self.prefix + LOG
        return sum(n for k, n in self.sizes.items() if k.startswith(start))


@dataclass
class CompactResult:
    """``snapshot_key`` is None when there was nothing worth compacting.

    ``merged_bytes``: bytes of the objects it read and deleted, by kind (``updates``,
    ``snapshots``); ``snapshot_bytes``: the size of the snapshot that now holds them.
    """

    snapshot_key: str | None
    merged_keys: list[str] = field(default_factory=list)
    docs: int = 0
    snapshot_bytes: int = 0
    merged_bytes: dict[str, int] = field(default_factory=dict)


OnWritten = Callable[[str, str, int], None]
"""``on_written(session_id, kind, nbytes)`` after every object this store puts (kind: updates,
snapshots, log); the worker counts stored bytes with it."""


class SessionStore(SessionHistory):
    """Session-level persistence over a ``Store``; safe with any number of concurrent peers."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        clock: Callable[[], int] | None = None,
        on_written: OnWritten | None = None,
    ) -> None:
        """``clock`` returns the milliseconds used in object names (tests make it deterministic)."""
        self.store = store
        self.worker_id = validate_name(worker_id, "worker id")
        self._clock = clock or _now_ms
        self.on_written = on_written

    # -- updates ---------------------------------------------------------------------------

    async def append_updates(
        self, session_id: str, updates: Sequence[tuple[str, bytes]], *, merged: bool = False
    ) -> str:
        """Write one new segment (one merged update per doc) and return its key.

        Merging also checks every update: one undecodable update would make the whole session
        unloadable forever, so it is refused here (``ValueError``) instead of persisted.
        ``merged=True`` says the caller already did both (one ``merge_updates`` result per doc,
        as a live worker's group commit does), which spares a thread hop per segment.
        """
        prefix = _prefix(session_id)
        if not updates:
            raise ValueError("append_updates needs at least one update")
        if merged:
            entries = list(updates)
        else:
            entries = await anyio.to_thread.run_sync(_merge_for_segment, updates)
        key = prefix + UPDATES + self._object_name(".seg")
        data = encode_segment(entries)
        await self.store.put(key, data)
        self._written(session_id, "updates", len(data))
        return key

    async def survey(self, session_id: str) -> Survey:
        """Everything under the session's prefix, sized: one listing (``Survey``)."""
        prefix = _prefix(session_id)
        return Survey(prefix, await self.store.list_sizes(prefix))

    async def load(
        self, session_id: str, survey: Survey | None = None, *, exclusive: bool = False
    ) -> LoadedSession:
        """Merge every snapshot and segment present; raise rather than return partial state.

        Starts from ``survey`` when given (a listing of the session taken before this call,
        one its caller knows is complete: ``Claim.first``), else from a new one. Then lists
        ``snapshots/`` again (rule 3: the survey listed the segments before that) and reads the
        metadata only when the survey saw it, at the same time. ``exclusive``: the caller knows
        that no compaction can have run since before the survey (nobody but the caller ever
        owned the session, and only owners compact), so the survey's snapshots are complete
        too and ``snapshots/`` is not listed again.

        Memory: each object is decoded as soon as its listing is complete and its raw bytes
        dropped; a document found in one object only (a compacted session) is used as stored,
        so a cold load of a compacted session costs about what reading its snapshot costs.
        """
        prefix = _prefix(session_id)
        cache: dict[str, bytes] = {}  # objects are immutable, so bytes read once stay valid
        if survey is None:
            if exclusive:
                raise ValueError("an exclusive load needs the survey taken before the claim")
            survey = await self.survey(session_id)
        elif survey.prefix != prefix:
            raise ValueError(f"a survey of {survey.prefix!r} cannot load {prefix!r}")
        snapshots, meta = await _both(
            _constant(survey.snapshots) if exclusive else self._list_snapshots(prefix),
            self.get_meta(session_id) if survey.has_meta else _constant(None),
        )
        keys = sorted(survey.segments + snapshots)
        for attempt in range(_LOAD_ATTEMPTS):
            if attempt > 0:
                keys = await self._list_state(prefix)
            fetched = await self._get_many([k for k in keys if k not in cache])
            cache.update((k, v) for k, v in fetched.items() if v is not None)
            del fetched
            if all(k in cache for k in keys):
                stored = _bytes_by_kind(prefix, [(k, len(cache[k])) for k in keys])
                objects = [(k, cache.pop(k)) for k in keys]
                cache.clear()
                docs = await anyio.to_thread.run_sync(_load_objects, objects) if objects else {}
                return LoadedSession(
                    docs=docs, keys=keys, meta=meta, stored=stored, log_bytes=survey.log_bytes
                )
            # A compactor deleted something between our listing and our read: its data is now in
            # a newer snapshot, which the next listing will show.
        raise StorageUnavailable(
            "load", prefix, RuntimeError(f"objects kept vanishing in {_LOAD_ATTEMPTS} listings")
        )

    async def compact(self, session_id: str) -> CompactResult:
        """Fold snapshots + segments into one new snapshot, then delete exactly what was read.

        Safe against anything concurrent (the module docstring's rules 1-3): a segment written
        meanwhile is not listed, so it is neither merged nor deleted; another compactor's
        snapshot is either read (and then contained in ours) or not listed (and kept); a
        process killed at any point leaves every object it read in place or inside a snapshot
        already stored.  The CPU work (decode, apply, encode) runs in a thread.
        """
        prefix = _prefix(session_id)
        keys = await self._list_state(prefix)
        if not _worth_compacting(prefix, keys):
            return CompactResult(snapshot_key=None)
        fetched = await self._get_many(keys)
        # An object deleted before we read it belongs to another compactor's set, not ours.
        objects = [(k, data) for k in keys if (data := fetched[k]) is not None]
        del fetched
        if not _worth_compacting(prefix, [k for k, _ in objects]):
            return CompactResult(snapshot_key=None)
        merged = [k for k, _ in objects]
        merged_bytes = _bytes_by_kind(prefix, [(k, len(data)) for k, data in objects])
        snapshot, docs = await anyio.to_thread.run_sync(_snapshot_objects, objects)
        del objects
        snapshot_key = prefix + SNAPSHOTS + self._object_name(".snap")
        await self.store.put(snapshot_key, snapshot)
        self._written(session_id, "snapshots", len(snapshot))
        await self._for_each(merged, self.store.delete)
        return CompactResult(
            snapshot_key=snapshot_key,
            merged_keys=merged,
            docs=docs,
            snapshot_bytes=len(snapshot),
            merged_bytes=merged_bytes,
        )

    # -- operations log --------------------------------------------------------------------

    async def append_log(self, session_id: str, entries: Sequence[Mapping[str, Any]]) -> str:
        """Write one JSON-lines segment; fills in ts, worker, userId, path and bytes if absent."""
        prefix = _prefix(session_id)
        if not entries:
            raise ValueError("append_log needs at least one entry")
        lines = []
        for entry in entries:
            if "op" not in entry:
                raise ValueError(f"log entry without 'op': {dict(entry)!r}")
            if not isinstance(entry.get("ts", ""), str):
                raise ValueError(f"log entry 'ts' must be an ISO-8601 string: {entry['ts']!r}")
            row: dict[str, Any] = {
                "ts": iso_time(),
                "userId": None,
                "worker": self.worker_id,
                "op": entry["op"],
                "path": None,
                "bytes": 0,
            }
            row.update(entry)
            lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        key = prefix + LOG + self._object_name(".jsonl")
        data = "".join(lines).encode("utf-8")
        await self.store.put(key, data)
        self._written(session_id, "log", len(data))
        return key

    async def read_log(self, session_id: str) -> list[dict[str, Any]]:
        """Every log entry of every worker, ordered by ts (ties: segment key, then line)."""
        entries, _ = await self.read_log_since(session_id)
        return entries

    async def read_log_since(
        self, session_id: str, skip: Collection[str] = ()
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Like ``read_log`` over the segments not in ``skip``, and the segment keys it read
        (``collab log --follow`` polls with what it has already shown)."""
        prefix = _prefix(session_id)
        keys = [k for k in await self.store.list(prefix + LOG) if k not in skip]
        fetched = await self._get_many(keys)
        rows: list[tuple[str, str, int, dict[str, Any]]] = []
        for key in keys:
            data = fetched[key]
            if data is not None:  # log segments are never deleted while a session exists
                for index, entry in enumerate(_parse_log(key, data)):
                    rows.append((entry["ts"], key, index, entry))
        rows.sort(key=lambda row: row[:3])
        return [row[3] for row in rows], keys

    # -- metadata and listing --------------------------------------------------------------

    async def get_meta(self, session_id: str) -> SessionMeta | None:
        key = _prefix(session_id) + META
        data = await self.store.get(key)
        if data is None:
            return None
        try:
            obj = json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise CorruptObject(key, f"not JSON: {exc}") from None
        return SessionMeta.from_json(obj, key)

    async def put_meta(self, session_id: str, meta: SessionMeta) -> None:
        key = _prefix(session_id) + META
        await self.store.put(key, json.dumps(meta.to_json(), ensure_ascii=False).encode("utf-8"))

    async def list_sessions(self) -> list[str]:
        ids = set()
        for key in await self.store.list("sessions/"):
            parts = key.split("/")
            if len(parts) > 2 and is_name(parts[1]):
                ids.add(parts[1])
        return sorted(ids)

    async def session_exists(self, session_id: str) -> bool:
        return bool(await self.store.list(_prefix(session_id)))

    # -- internals -------------------------------------------------------------------------

    def _written(self, session_id: str, kind: str, nbytes: int) -> None:
        if self.on_written is not None:
            self.on_written(session_id, kind, nbytes)

    def _key(self, session_id: str, part: str) -> str:
        return _prefix(session_id) + part

    def _object_name(self, suffix: str) -> str:
        ms = self._clock()
        seq = next(_SEQUENCE)
        return f"{ms:013d}-{self.worker_id}-{seq:08d}-{_PROCESS_TOKEN}{suffix}"

    async def _list_state(self, prefix: str) -> list[str]:
        # Order matters (rule 3 in the module docstring): updates first, then snapshots.
        segments = await self.store.list(prefix + UPDATES)
        state = [k for k in segments if k.endswith(".seg")]
        return sorted(state + await self._list_snapshots(prefix))

    async def _list_snapshots(self, prefix: str) -> list[str]:
        return [k for k in await self.store.list(prefix + SNAPSHOTS) if k.endswith(".snap")]

    async def _get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        results: dict[str, bytes | None] = {}

        async def get(key: str) -> None:
            results[key] = await self.store.get(key)

        await self._for_each(keys, get)
        return results

    async def _for_each(self, keys: Sequence[str], call: Callable[[str], Awaitable[None]]) -> None:
        """Run ``call`` for every key, a few at a time; the first failure is re-raised as is."""
        if len(keys) == 1:
            await call(keys[0])
            return
        limiter = anyio.CapacityLimiter(_PARALLEL_REQUESTS)
        errors: list[Exception] = []

        async def one(key: str) -> None:
            async with limiter:
                try:
                    await call(key)
                except Exception as exc:
                    # Unwrapped on purpose: callers catch StorageUnavailable, not ExceptionGroup.
                    errors.append(exc)
                    tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(one, key)
        if errors:
            raise errors[0]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _prefix(session_id: str) -> str:
    return f"sessions/{validate_session_id(session_id)}/"


def _merge_for_segment(updates: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    per_doc: dict[str, list[bytes]] = {}
    for name, update in updates:
        per_doc.setdefault(name, []).append(update)
    entries = []
    for name, doc_updates in per_doc.items():
        try:
            entries.append((name, merge_updates(*doc_updates)))
        except ValueError:
            raise ValueError(f"refusing to store an invalid Yjs update for doc {name!r}") from None
    return entries


A = TypeVar("A")
B = TypeVar("B")


async def _constant(value: A) -> A:
    return value


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Two awaitables run concurrently; both results, or the first's error once both are done."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for result in (a, b):
        if isinstance(result, BaseException):
            raise result
    return cast(A, a), cast(B, b)


def _worth_compacting(prefix: str, keys: Sequence[str]) -> bool:
    """Any segment, or more than one snapshot."""
    return len(keys) > 1 or any(k.startswith(prefix + UPDATES) for k in keys)


def _bytes_by_kind(prefix: str, sizes: Iterable[tuple[str, int]]) -> dict[str, int]:
    by_kind = {"updates": 0, "snapshots": 0}
    for key, size in sizes:
        by_kind["updates" if key.startswith(prefix + UPDATES) else "snapshots"] += size
    return by_kind


def _per_doc(objects: list[tuple[str, bytes]]) -> dict[str, list[tuple[str, bytes]]]:
    """Decode objects in order, dropping each one's raw bytes once decoded (``objects`` is
    emptied): at no moment are all raw objects and all their decoded copies held at once."""
    per_doc: dict[str, list[tuple[str, bytes]]] = {}
    objects.reverse()
    while objects:
        key, data = objects.pop()
        for name, update in decode_segment(data, key):
            per_doc.setdefault(name, []).append((key, update))
        del data
    return per_doc


_SNAPSHOT_FORM_BYTES = 64 * 1024


def _load_objects(objects: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """One update per doc for a live session; runs in a thread (pure CPU, can be large).

    A doc stored in one object only is checked (``get_state`` decodes it whole) and used as is:
    merging a single update would only copy it. A large doc in several objects is returned in
    snapshot form (``_snapshot_doc``): the session applies it to its Doc on the event loop,
    and applying a merge that still holds every deleted character took ten times longer there
    than building the compact form here (docs/storage.md, Compaction). A small one is merged:
    its apply is cheap anywhere, and a join storm loads many of them.
    """
    processed = sum(len(data) for _, data in objects)
    per_doc = _per_doc(objects)
    docs: dict[str, bytes] = {}
    while per_doc:
        name, items = per_doc.popitem()
        if len(items) == 1:
            key, update = items[0]
            try:
                get_state(update)
            except ValueError as exc:
                raise CorruptObject(key, f"doc {name!r}: invalid Yjs update ({exc})") from None
            docs[name] = update
        elif sum(len(update) for _, update in items) >= _SNAPSHOT_FORM_BYTES:
            docs[name] = _snapshot_doc(name, items)
        else:
            docs[name] = _merge_doc(name, items)
    release_free_memory(processed)
    return docs


def _snapshot_objects(objects: list[tuple[str, bytes]]) -> tuple[bytes, int]:
    """The snapshot of ``objects`` (every doc as its compacted state) and its number of docs;
    runs in a thread."""
    processed = sum(len(data) for _, data in objects)
    per_doc = _per_doc(objects)
    entries = [(name, _snapshot_doc(name, per_doc.pop(name))) for name in sorted(per_doc)]
    snapshot, docs = encode_segment(entries), len(entries)
    del entries
    release_free_memory(processed)
    return snapshot, docs


def _snapshot_doc(name: str, items: list[tuple[str, bytes]]) -> bytes:
    """The encoded state of a Doc with every update applied, plus their whole delete set.

    Exactly the content of ``merge_updates`` (same state vector, same text, same pending
    structs), without the deleted content.  The delete set is added back because a Doc keeps
    the deletions whose targets it has not seen out of its encoding (a segment from another
    writer that this listing missed would otherwise come back undeleted); ``get_update(merged,
    state)`` is what the merge holds beyond that state: its pending structs and every deletion.

    The Doc takes the objects one by one, not the merge: pycrdt holds the GIL for a whole call,
    so one apply of a long history's merge (every deleted character in it) stalled the worker's
    event loop for as long as it ran (0.89 s for 200,000 keystrokes, and growing with the
    history: long enough, on a large document, to let the lease lapse), while the same objects
    applied one at a time take less in all and yield the GIL between them.
    """
    merged = _merge_doc(name, items)
    doc: Doc[Any] = Doc()
    items.reverse()
    while items:  # in the objects' order (oldest first), each dropped once applied
        doc.apply_update(items.pop()[1])
    state = doc.get_update()
    del doc
    return merge_updates(state, get_update(merged, get_state(state)))


def _merge_doc(name: str, items: list[tuple[str, bytes]]) -> bytes:
    try:
        if len(items) == 1:
            return merge_updates(items[0][1])  # checks it
        return merge_many([update for _, update in items])
    except ValueError:
        pass
    for key, update in items:  # find the culprit so the error names the object
        try:
            merge_updates(update)
        except ValueError as exc:
            raise CorruptObject(key, f"doc {name!r}: invalid Yjs update ({exc})") from None
    raise CorruptObject(None, f"doc {name!r}: updates are valid alone but cannot be merged")


_MERGE_FAN_IN = 32


def merge_many(updates: list[bytes]) -> bytes:
    """``merge_updates(*updates)``, in rounds of ``_MERGE_FAN_IN``: one merge of thousands of
    small updates costs time quadratic in their number (3,000: 37 ms, 30,000: 5 s), a tree of
    small merges a fraction of it, with the same result.  A single update is returned as is."""
    while len(updates) > 1:
        updates = [
            merge_updates(*updates[i : i + _MERGE_FAN_IN]) if i + 1 < len(updates) else updates[i]
            for i in range(0, len(updates), _MERGE_FAN_IN)
        ]
    return updates[0]


def _parse_log(key: str, data: bytes) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptObject(key, f"log segment is not UTF-8: {exc}") from None
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise CorruptObject(key, f"line {number} is not JSON: {exc}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("ts"), str):
            raise CorruptObject(key, f"line {number} is not an entry with a string 'ts'")
        entries.append(entry)
    return entries
