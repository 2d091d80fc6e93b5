"""SessionStore: segments, snapshots, merge-on-read, compaction, log and metadata, per store."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text

from contract.ids import validate_session_id
from worker.storage import (
    CorruptObject,
    LocalStore,
    SessionMeta,
    SessionStore,
    StorageUnavailable,
    Store,
    encode_segment,
)


def text_update(text: str, base: Doc | None = None) -> bytes:
    """A real Yjs update that appends ``text`` to the doc's ``content`` Y.Text."""
    doc = base if base is not None else Doc()
    content = doc.get("content", type=Text)
    before = doc.get_state()
    content += text
    return doc.get_update(before)


def text_of(update: bytes) -> str:
    doc = Doc()
    doc.apply_update(update)
    return str(doc.get("content", type=Text))


class HookedStore:
    """Delegates to a real store and runs ``hook`` once, before the first matching call.

    It only chooses *when* another actor runs; every byte still goes to the real store.
    """

    def __init__(
        self, inner: Store, op: str, match: str, hook: Callable[[], Awaitable[None]]
    ) -> None:
        self.inner, self.op, self.match, self.hook = inner, op, match, hook
        self.fired = False

    async def _maybe(self, op: str, arg: str) -> None:
        if not self.fired and op == self.op and self.match in arg:
            self.fired = True
            await self.hook()

    async def get(self, key: str) -> bytes | None:
        await self._maybe("get", key)
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes) -> None:
        await self._maybe("put", key)
        await self.inner.put(key, data)

    async def delete(self, key: str) -> None:
        await self._maybe("delete", key)
        await self.inner.delete(key)

    async def list(self, prefix: str) -> list[str]:
        result = await self.inner.list(prefix)
        await self._maybe("list", prefix)  # after: the listing is now stale
        return result

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        result = await self.inner.list_sizes(prefix)
        await self._maybe("list", prefix)  # after: the listing is now stale
        return result

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


class TestSessionIds:
    @pytest.mark.parametrize(
        "good", ["a", "S1", "0", "my-session_2.v1", "a" * 128, "9f8e7d6c-uuid-like"]
    )
    def test_valid_ids_pass_through(self, good: str) -> None:
        """Ordinary ids are returned unchanged."""
        assert validate_session_id(good) == good

    @pytest.mark.parametrize(
        "bad",
        ["", "a" * 129, "../x", "a/b", ".hidden", "-x", "_x", "a..b", "a b", "a\0", "é", "a\\b"],
    )
    def test_invalid_ids_raise_a_clear_value_error(self, bad: str) -> None:
        """Anything that could escape sessions/{id}/ or confuse a URL is refused, with a reason."""
        with pytest.raises(ValueError, match="invalid session id"):
            validate_session_id(bad)

    async def test_session_store_validates_before_any_io(self, store: Store) -> None:
        """Every method refuses a bad id up front; nothing is written."""
        sessions = SessionStore(store, "w1")
        with pytest.raises(ValueError):
            await sessions.append_updates("../x", [("", text_update("x"))])
        with pytest.raises(ValueError):
            await sessions.load("a/b")
        with pytest.raises(ValueError):
            await sessions.compact("")
        with pytest.raises(ValueError):
            await sessions.append_log("..", [{"op": "x"}])
        with pytest.raises(ValueError):
            await sessions.put_meta("a..b", SessionMeta.new())
        assert await store.list("") == []

    def test_worker_id_is_validated(self, tmp_path: Path) -> None:
        """A worker id ends up in keys, so it follows the same rules."""
        with pytest.raises(ValueError, match="invalid worker id"):
            SessionStore(LocalStore(tmp_path), "bad/worker")


class TestUpdatesAndLoad:
    async def test_a_missing_session_loads_empty(self, store: Store) -> None:
        """No objects: no docs, no keys, no metadata (the worker decides what "new" means)."""
        loaded = await SessionStore(store, "w1").load("fresh")
        assert (loaded.docs, loaded.keys, loaded.meta) == ({}, [], None)

    async def test_appended_updates_load_merged_per_doc(self, store: Store) -> None:
        """Two segments for the same doc load as one update holding both edits."""
        sessions = SessionStore(store, "w1")
        doc = Doc()
        first = await sessions.append_updates("s1", [("a.txt", text_update("hello", doc))])
        second = await sessions.append_updates("s1", [("a.txt", text_update(" world", doc))])
        loaded = await sessions.load("s1")
        assert text_of(loaded.docs["a.txt"]) == "hello world"
        assert loaded.keys == sorted([first, second])

    async def test_segment_keys_follow_the_layout(self, store: Store) -> None:
        """updates/{ms:013d}-{worker}-{seq:08d}-{rand}.seg, unique even within one millisecond."""
        sessions = SessionStore(store, "worker-7")
        keys = [await sessions.append_updates("s1", [("", text_update("x"))]) for _ in range(5)]
        pattern = r"sessions/s1/updates/\d{13}-worker-7-\d{8}-[0-9a-f]{6}\.seg"
        assert all(re.fullmatch(pattern, key) for key in keys)
        assert len(set(keys)) == 5
        assert await store.list("sessions/s1/updates/") == sorted(keys)

    async def test_two_workers_on_one_session_lose_nothing(self, store: Store) -> None:
        """Concurrent owners (a ring change) both write; the next load merges both."""
        one, two = SessionStore(store, "w1"), SessionStore(store, "w2")
        index = Doc()
        files = index.get("files", type=Map)
        before = index.get_state()
        files["a.txt"] = "meta"
        await one.append_updates(
            "s1", [("a.txt", text_update("from one")), ("", index.get_update(before))]
        )
        await two.append_updates("s1", [("a.txt", text_update("from two"))])
        loaded = await one.load("s1")
        text = text_of(loaded.docs["a.txt"])
        assert "from one" in text and "from two" in text
        merged_index = Doc()
        merged_index.apply_update(loaded.docs[""])
        assert dict(merged_index.get("files", type=Map)) == {"a.txt": "meta"}

    async def test_invalid_yjs_updates_are_refused_not_stored(self, store: Store) -> None:
        """One bad update would poison the session forever, so append refuses it."""
        sessions = SessionStore(store, "w1")
        with pytest.raises(ValueError, match="invalid Yjs update"):
            await sessions.append_updates("s1", [("a", text_update("ok")), ("b", b"\x07garbage")])
        with pytest.raises(ValueError):
            await sessions.append_updates("s1", [])
        assert await store.list("") == []

    async def test_a_corrupt_segment_makes_load_raise(self, store: Store) -> None:
        """Never serve partial state: a damaged object fails the load, naming the object."""
        sessions = SessionStore(store, "w1")
        await sessions.append_updates("s1", [("a", text_update("fine"))])
        bad = "sessions/s1/updates/0000000000001-w9-00000001-abcdef.seg"
        await store.put(bad, b"CSEG\x01\x01 truncated")
        with pytest.raises(CorruptObject) as info:
            await sessions.load("s1")
        assert info.value.key == bad

    async def test_a_well_framed_but_invalid_update_makes_load_raise(self, store: Store) -> None:
        """A segment whose framing is fine but whose Yjs bytes are not is corrupt too."""
        sessions = SessionStore(store, "w1")
        await sessions.append_updates("s1", [("a", text_update("fine"))])
        bad = "sessions/s1/snapshots/0000000000001-w9-00000001-abcdef.snap"
        await store.put(bad, encode_segment([("a", b"\x05not yjs")]))
        with pytest.raises(CorruptObject, match="invalid Yjs update") as info:
            await sessions.load("s1")
        assert info.value.key == bad
        with pytest.raises(CorruptObject):
            await sessions.compact("s1")
        assert len(await store.list("sessions/s1/")) == 2, "a failed compaction deletes nothing"

    async def test_load_retries_when_a_listed_object_vanishes(self, store: Store) -> None:
        """A compactor deleting a listed segment before load reads it costs a re-list, not data."""
        writer = SessionStore(store, "w1")
        doc = Doc()
        for word in ["alpha ", "beta ", "gamma"]:
            await writer.append_updates("s1", [("a", text_update(word, doc))])

        async def compact_now() -> None:
            await SessionStore(store, "compactor").compact("s1")

        hooked = HookedStore(store, "get", "/updates/", compact_now)
        loaded = await SessionStore(hooked, "reader").load("s1")
        assert hooked.fired
        assert text_of(loaded.docs["a"]) == "alpha beta gamma"
        assert all("/snapshots/" in key for key in loaded.keys)

    async def test_a_compaction_during_the_survey_loses_nothing(self, store: Store) -> None:
        """Rule 3 with the survey: a load's first listing is of the whole session, and a listing
        is not atomic (S3 pages through it in key order: ``snapshots/`` before ``updates/``).
        A compaction that puts its snapshot after the listing passed ``snapshots/`` and deletes
        every segment before it reaches ``updates/`` leaves a survey with neither; the load
        lists ``snapshots/`` again after it and finds the snapshot."""
        writer = SessionStore(store, "w1")
        doc = Doc()
        for word in ["alpha ", "beta ", "gamma"]:
            await writer.append_updates("s1", [("a", text_update(word, doc))])

        class SplitListing(HookedStore):
            async def list_sizes(self, prefix: str) -> dict[str, int]:
                if self.fired or prefix != "sessions/s1/":
                    return await self.inner.list_sizes(prefix)
                before = await self.inner.list_sizes(prefix)
                early = {k: n for k, n in before.items() if "/updates/" not in k}
                await self._maybe("list", prefix)  # the compaction, mid-listing
                later = await self.inner.list_sizes(prefix)
                return early | {k: n for k, n in later.items() if "/updates/" in k}

        async def compact_now() -> None:
            assert (await SessionStore(store, "compactor").compact("s1")).snapshot_key

        hooked = SplitListing(store, "list", "sessions/s1/", compact_now)
        survey = await SessionStore(hooked, "reader").survey("s1")
        assert hooked.fired and survey.segments == []
        loaded = await SessionStore(store, "reader").load("s1", survey=survey)
        assert text_of(loaded.docs["a"]) == "alpha beta gamma"
        assert loaded.keys and all("/snapshots/" in key for key in loaded.keys)

    async def test_a_survey_taken_earlier_is_loaded_from(self, store: Store) -> None:
        """``load(survey=...)`` starts from the given listing: the segments it holds, its log's
        bytes, and the metadata only when it saw some."""
        sessions = SessionStore(store, "w1")
        empty = await sessions.survey("s1")
        assert (empty.segments, empty.has_meta, empty.log_bytes) == ([], False, 0)
        await sessions.append_updates("s1", [("a", text_update("hello"))])
        await sessions.put_meta("s1", SessionMeta.new(is_git_repo=True))
        await sessions.append_log("s1", [{"op": "edit", "user": "ann"}])
        # Taken before the writes, the survey does not see them: the caller vouches for it.
        stale = await sessions.load("s1", survey=empty)
        assert stale.docs == {} and stale.meta is None
        fresh = await sessions.load("s1", survey=await sessions.survey("s1"))
        assert text_of(fresh.docs["a"]) == "hello"
        assert fresh.meta is not None and fresh.meta.is_git_repo
        assert fresh.log_bytes == sum((await store.list_sizes("sessions/s1/log/")).values()) > 0
        with pytest.raises(ValueError):
            await sessions.load("s2", survey=empty)

    async def test_an_exclusive_load_takes_the_survey_as_it_is(self, store: Store) -> None:
        """``exclusive=True`` (nobody else ever owned the session): the survey's snapshots and
        segments are the whole load, with no listing after it; without a survey it is refused."""
        writer = SessionStore(store, "w1")
        doc = Doc()
        await writer.append_updates("s1", [("a", text_update("one ", doc))])
        await writer.compact("s1")
        await writer.append_updates("s1", [("a", text_update("two", doc))])
        survey = await writer.survey("s1")
        assert len(survey.snapshots) == 1 and len(survey.segments) == 1
        lists: list[str] = []

        class Counting(HookedStore):
            async def list(self, prefix: str) -> list[str]:
                lists.append(prefix)
                return await self.inner.list(prefix)

        async def nothing() -> None:
            return None

        reader = SessionStore(Counting(store, "", "", nothing), "r")
        loaded = await reader.load("s1", survey, exclusive=True)
        assert text_of(loaded.docs["a"]) == "one two" and lists == []
        assert text_of((await reader.load("s1", survey)).docs["a"]) == "one two"
        assert lists == ["sessions/s1/snapshots/"]
        with pytest.raises(ValueError):
            await reader.load("s1", exclusive=True)

    async def test_load_gives_up_after_bounded_attempts(self, store: Store) -> None:
        """If objects keep vanishing, load reports storage as unavailable rather than spin."""

        class AlwaysVanishing(HookedStore):
            async def get(self, key: str) -> bytes | None:
                return None if "/updates/" in key else await self.inner.get(key)

        await SessionStore(store, "w1").append_updates("s1", [("a", text_update("x"))])

        async def nothing() -> None:
            return None

        with pytest.raises(StorageUnavailable):
            await SessionStore(AlwaysVanishing(store, "", "", nothing), "r").load("s1")

    async def test_a_thousand_doc_session_round_trips(self, store: Store) -> None:
        """1,000 documents survive append, load, compact and load again, each with its own text."""
        sessions = SessionStore(store, "w1")
        updates = [(f"src/file_{i:04d}.py", text_update(f"print({i})\n")) for i in range(1000)]
        await sessions.append_updates("big", updates[:600])
        await sessions.append_updates("big", updates[600:])
        loaded = await sessions.load("big")
        assert len(loaded.docs) == 1000
        assert all(
            text_of(loaded.docs[f"src/file_{i:04d}.py"]) == f"print({i})\n" for i in range(1000)
        )
        result = await sessions.compact("big")
        assert result.docs == 1000
        reloaded = await sessions.load("big")
        assert reloaded.keys == [result.snapshot_key]
        assert {n: text_of(u) for n, u in reloaded.docs.items()} == {
            n: text_of(u) for n, u in loaded.docs.items()
        }


class TestCompaction:
    async def test_compaction_merges_everything_into_one_snapshot(self, store: Store) -> None:
        """After compaction the session is one snapshot and loads to the same state."""
        sessions = SessionStore(store, "w1")
        doc = Doc()
        for word in ["one ", "two ", "three"]:
            await sessions.append_updates(
                "s1", [("a", text_update(word, doc)), ("b", text_update(word))]
            )
        before = await sessions.load("s1")
        result = await sessions.compact("s1")
        assert result.snapshot_key is not None
        assert re.fullmatch(
            r"sessions/s1/snapshots/\d{13}-w1-\d{8}-[0-9a-f]{6}\.snap", result.snapshot_key
        )
        assert result.merged_keys == before.keys
        assert result.docs == 2
        assert await store.list("sessions/s1/") == [result.snapshot_key]
        after = await sessions.load("s1")
        assert text_of(after.docs["a"]) == "one two three"
        assert text_of(after.docs["b"]) == text_of(before.docs["b"])

    async def test_compaction_folds_old_snapshots_and_new_segments(self, store: Store) -> None:
        """A second compaction merges the previous snapshot with segments written since."""
        sessions = SessionStore(store, "w1")
        doc = Doc()
        await sessions.append_updates("s1", [("a", text_update("old ", doc))])
        first = await sessions.compact("s1")
        await sessions.append_updates("s1", [("a", text_update("new", doc))])
        second = await sessions.compact("s1")
        assert first.snapshot_key in second.merged_keys
        assert await store.list("sessions/s1/") == [second.snapshot_key]
        assert text_of((await sessions.load("s1")).docs["a"]) == "old new"

    async def test_nothing_to_compact_is_a_no_op(self, store: Store) -> None:
        """An empty session, or one that is already a single snapshot, is left alone."""
        sessions = SessionStore(store, "w1")
        assert (await sessions.compact("s1")).snapshot_key is None
        await sessions.append_updates("s1", [("a", text_update("x"))])
        snapshot = (await sessions.compact("s1")).snapshot_key
        again = await sessions.compact("s1")
        assert again.snapshot_key is None and again.merged_keys == []
        assert await store.list("sessions/s1/") == [snapshot]

    async def test_a_segment_written_during_compaction_survives(self, store: Store) -> None:
        """Compaction deletes only what it read: a segment appended after its listing stays."""
        writer = SessionStore(store, "w1")
        await writer.append_updates("s1", [("a", text_update("before "))])
        late: list[str] = []

        async def append_late() -> None:
            late.append(await writer.append_updates("s1", [("a", text_update("during"))]))

        hooked = HookedStore(store, "list", "/snapshots/", append_late)
        result = await SessionStore(hooked, "compactor").compact("s1")
        assert late and late[0] not in result.merged_keys
        assert await store.get(late[0]) is not None
        text = text_of((await writer.load("s1")).docs["a"])
        assert "before " in text and "during" in text

    async def test_two_compactors_racing_lose_nothing(self, store: Store) -> None:
        """A compactor whose inputs another compactor already deleted still loses nothing."""
        writer = SessionStore(store, "w1")
        for word in ["a", "b", "c"]:
            await writer.append_updates("s1", [("d", text_update(word))])

        async def other_compactor() -> None:
            await SessionStore(store, "c2").compact("s1")

        hooked = HookedStore(store, "put", "/snapshots/", other_compactor)
        await SessionStore(hooked, "c1").compact("s1")
        assert len(await store.list("sessions/s1/snapshots/")) >= 1
        assert sorted(text_of((await writer.load("s1")).docs["d"])) == ["a", "b", "c"]


class TestLogAndMeta:
    async def test_log_reads_back_in_ts_order_across_workers(self, store: Store) -> None:
        """Entries from every worker's segments come back sorted by ts, with all fields."""
        one, two = SessionStore(store, "w1"), SessionStore(store, "w2")
        await one.append_log(
            "s1",
            [
                {
                    "ts": "2024-01-01T00:00:03.000Z",
                    "userId": "u1",
                    "op": "update",
                    "path": "a",
                    "bytes": 3,
                },
                {"ts": "2024-01-01T00:00:01.000Z", "userId": "u1", "op": "create", "path": "a"},
            ],
        )
        await two.append_log(
            "s1", [{"ts": "2024-01-01T00:00:02.000Z", "userId": "u2", "op": "join", "extra": [1]}]
        )
        log = await one.read_log("s1")
        assert [e["op"] for e in log] == ["create", "join", "update"]
        assert log[1] == {
            "ts": "2024-01-01T00:00:02.000Z",
            "userId": "u2",
            "worker": "w2",
            "path": None,
            "bytes": 0,
            "op": "join",
            "extra": [1],
        }
        assert log[2]["bytes"] == 3 and log[2]["worker"] == "w1"

    async def test_log_fills_in_ts_and_stores_json_lines(self, store: Store) -> None:
        """A missing ts is now (ISO-8601 UTC); the object is plain JSON lines under log/."""
        sessions = SessionStore(store, "w1")
        key = await sessions.append_log("s1", [{"op": "a", "userId": "ü"}, {"op": "b"}])
        assert re.fullmatch(r"sessions/s1/log/\d{13}-w1-\d{8}-[0-9a-f]{6}\.jsonl", key)
        raw = await store.get(key)
        assert raw is not None
        lines = [json.loads(line) for line in raw.decode().splitlines()]
        assert [line["op"] for line in lines] == ["a", "b"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["ts"])
        with pytest.raises(ValueError, match="without 'op'"):
            await sessions.append_log("s1", [{"userId": "u"}])

    async def test_a_corrupt_log_segment_raises(self, store: Store) -> None:
        """A log line that is not a JSON entry is reported, not skipped."""
        await store.put(
            "sessions/s1/log/0000000000001-w1-00000001-abcdef.jsonl", b'{"ts": "x"}\nnot json\n'
        )
        with pytest.raises(CorruptObject, match="line 2"):
            await SessionStore(store, "w1").read_log("s1")

    async def test_meta_round_trips_with_camel_case_names(self, store: Store) -> None:
        """meta.json keeps the seed's names; get_meta returns what put_meta stored."""
        sessions = SessionStore(store, "w1")
        assert await sessions.get_meta("s1") is None
        meta = SessionMeta.new(users=["u1", "u2"], is_git_repo=True)
        await sessions.put_meta("s1", meta)
        assert await sessions.get_meta("s1") == meta
        raw = await store.get("sessions/s1/meta.json")
        assert raw is not None
        assert set(json.loads(raw)) == {"created", "lastActive", "users", "isGitRepo"}
        assert (await sessions.load("s1")).meta == meta

    async def test_corrupt_meta_raises(self, store: Store) -> None:
        """Unreadable metadata is CorruptObject, like any other damaged object."""
        await store.put("sessions/s1/meta.json", b"{not json")
        with pytest.raises(CorruptObject):
            await SessionStore(store, "w1").get_meta("s1")
        await store.put("sessions/s1/meta.json", b'{"created": 1}')
        with pytest.raises(CorruptObject):
            await SessionStore(store, "w1").get_meta("s1")

    async def test_sessions_are_listed_and_found(self, store: Store) -> None:
        """list_sessions names every session with any object; session_exists agrees."""
        sessions = SessionStore(store, "w1")
        await sessions.append_updates("beta", [("", text_update("x"))])
        await sessions.put_meta("alpha", SessionMeta.new())
        await sessions.append_log("alphabet", [{"op": "x"}])
        await store.put("unrelated/key", b"")
        assert await sessions.list_sessions() == ["alpha", "alphabet", "beta"]
        assert await sessions.session_exists("alpha")
        assert not await sessions.session_exists("alph")
