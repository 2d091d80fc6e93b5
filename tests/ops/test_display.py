"""How commands print: tables, JSON lines, and progress lines that suit a terminal or a log."""

from __future__ import annotations

import io
import json

from ops.display import emit, progress, table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestOutput:
    def test_a_table_aligns_columns_and_shows_missing_values_as_dashes(self) -> None:
        rows = [{"id": "w-0", "n": 3}, {"id": "worker-10", "n": None, "extra": 1}]
        assert table(rows, [("id", "WORKER"), ("n", "SESSIONS")]).splitlines() == [
            "WORKER     SESSIONS",
            "w-0        3",
            "worker-10  -",
        ]

    def test_json_is_one_object_per_line_with_every_field(self) -> None:
        out = io.StringIO()
        emit([{"a": 1, "b": [1, 2]}, {"a": 2}], [("a", "A")], as_json=True, out=out)
        assert [json.loads(line) for line in out.getvalue().splitlines()] == [
            {"a": 1, "b": [1, 2]},
            {"a": 2},
        ]


class TestProgress:
    def test_off_a_terminal_only_changes_are_printed_and_the_timer_only_at_the_end(self) -> None:
        out = io.StringIO()
        show = progress("draining w-1", out)
        for elapsed in ("0.2 s", "0.5 s", "0.7 s"):
            show("2 session(s) left", ticking=elapsed)
        show("1 session(s) left", ticking="1.0 s")
        show("no sessions left", ticking="1.2 s", done=True)
        assert out.getvalue().splitlines() == [
            "draining w-1: 2 session(s) left",
            "draining w-1: 1 session(s) left",
            "draining w-1: no sessions left (1.2 s)",
        ]

    def test_on_a_terminal_the_line_is_rewritten_in_place(self) -> None:
        out = Terminal()
        show = progress("draining w-1", out)
        show("2 session(s) left", ticking="0.2 s")
        show("no sessions left", ticking="0.4 s", done=True)
        assert out.getvalue() == (
            "\r\033[Kdraining w-1: 2 session(s) left (0.2 s)"
            "\r\033[Kdraining w-1: no sessions left (0.4 s)\n"
        )
