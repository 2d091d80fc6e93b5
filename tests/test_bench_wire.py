"""The load generator's bytes are the ones real Yjs clients and servers exchange."""

from __future__ import annotations

from pycrdt import Doc, Text, merge_updates

from bench.stats import Histogram
from bench.wire import MARKER, Codec, Framing, Kind, TextAppender, marker, varstring


class TestTextAppender:
    def test_updates_are_byte_for_byte_what_pycrdt_sends(self) -> None:
        """Appending to a Text in pycrdt emits exactly the updates the appender makes by hand."""
        doc: Doc[Text] = Doc(client_id=123456789)
        text = doc.get("content", type=Text)
        emitted: list[bytes] = []
        doc.observe(lambda event: emitted.append(event.update))
        for part in ("first", "x", "third part"):
            text += part
        appender = TextAppender(123456789)
        assert [appender.update(p.encode()) for p in ("first", "x", "third part")] == emitted

    def test_two_writers_merge_and_markers_survive_verbatim(self) -> None:
        """Markers stay findable in raw bytes, also after Yjs merges several updates into one."""
        a, b = TextAppender(1), TextAppender(2)
        updates = [
            a.update(marker(10, 1, 0)),
            b.update(marker(11, 2, 0)),
            a.update(marker(12, 1, 1)),
        ]
        found = MARKER.findall(merge_updates(*updates))
        assert sorted(found) == sorted(MARKER.findall(b"".join(updates)))
        assert len(found) == 3


class TestCodec:
    def test_hocuspocus_prefixes_the_document_name_and_authenticates_first(self) -> None:
        codec = Codec(Framing.HOCUSPOCUS, "s/a.txt")
        auth, step1 = codec.hello()
        assert auth.startswith(varstring("s/a.txt") + b"\x02\x00")
        assert step1 == varstring("s/a.txt") + b"\x00\x00\x01\x00"
        assert codec.classify(varstring("s/a.txt") + b"\x02\x02" + varstring("read-write")) is (
            Kind.AUTHENTICATED
        )
        assert codec.classify(codec.update(b"\x00\x00")) is Kind.UPDATE

    def test_y_websocket_messages_are_unprefixed(self) -> None:
        codec = Codec(Framing.YWS, "s/a.txt")
        assert codec.hello() == [b"\x00\x00\x01\x00"]
        assert codec.classify(b"\x00\x01\x02\x00\x00") is Kind.STEP2
        assert codec.classify(b"\x01\x05abcde") is Kind.OTHER


class TestHistogram:
    def test_percentiles_are_within_one_percent_and_merge(self) -> None:
        first, second = Histogram(), Histogram()
        for value in range(1, 501):
            first.add(value)
        for value in range(501, 1001):
            second.add(value)
        second.merge(Histogram.from_json(first.to_json()))
        assert abs((second.percentile(50) or 0) - 500) / 500 < 0.01
        assert abs((second.percentile(99) or 0) - 990) / 990 < 0.01
