"""The one way commands print results: a readable table by default, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn, TextIO

import anyio
import typer

from .client import OpsError


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """``columns`` are (key, heading); values are shown as text, missing ones as ``-``."""
    cells = [[heading for _, heading in columns]]
    for row in rows:
        cells.append([_text(row.get(key)) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return "\n".join(lines)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    as_json: bool,
    out: TextIO = sys.stdout,
    header: bool = True,
) -> None:
    """Prints rows: one JSON object per line with ``as_json``, else a table."""
    if as_json:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif rows:
        text = table(rows, columns)
        out.write((text if header else text.split("\n", 1)[-1]) + "\n")
    out.flush()


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def progress(label: str, out: TextIO | None = None) -> Callable[..., None]:
    """A progress line on stderr: rewritten in place on a terminal, one line per change otherwise.

    ``show(text, ticking="…")`` updates it; ``ticking`` (a timer) is shown on a terminal only, so
    a log file gets a line when ``text`` changes, not every poll. ``done=True`` ends the line.
    """
    stream = sys.stderr if out is None else out
    live = stream.isatty()
    last: list[str | None] = [None]

    def show(text: str, *, ticking: str = "", done: bool = False) -> None:
        line = f"{label}: {text}"
        if live:
            stream.write("\r\033[K" + line + (f" ({ticking})" if ticking else ""))
            stream.write("\n" if done else "")
        elif line != last[0]:
            stream.write(line + (f" ({ticking})" if ticking and done else "") + "\n")
        last[0] = line
        stream.flush()

    return show


def run_command(name: str, main: Callable[[], Awaitable[int]]) -> NoReturn:
    """Runs a command's async ``main`` and exits with its code. An ``OpsError`` becomes one line
    on stderr, ``collab NAME: cause; fix``, and that error's exit code."""
    try:
        code = anyio.run(main)
    except OpsError as exc:
        typer.echo(f"collab {name}: {exc}", err=True)
        code = exc.exit_code
    raise typer.Exit(code)
