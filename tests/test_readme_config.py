"""The README's configuration tables against the code that reads the environment: every variable
the worker and the router read is in a table, and every variable a table names is read."""

from __future__ import annotations

import re

from tests.deploy.config_names import ops_env_names, router_env_names, worker_env_names
from tests.support import ROOT


def configuration() -> str:
    text = (ROOT / "README.md").read_text()
    return text[
        text.index("## Configuration") : text.index("\n## ", text.index("## Configuration") + 1)
    ]


def table_variables() -> set[str]:
    """The variables the tables' first column names (``NAME`` or ``NAME``, ``OTHER`` (default))."""
    names: set[str] = set()
    for line in configuration().splitlines():
        if line.startswith("| `"):
            first = line.split(" | ")[0]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first))
    return names


def test_every_variable_the_worker_and_the_router_read_is_in_a_table() -> None:
    named = table_variables()
    for program, read in (("worker", worker_env_names()), ("router", router_env_names())):
        # NAME_FILE forms are one sentence under the tables (the next test).
        missing = sorted(n for n in read if n not in named and not n.endswith("_FILE"))
        assert not missing, f"the README's configuration omits what the {program} reads: {missing}"


def test_every_variable_a_table_names_is_read() -> None:
    read = worker_env_names() | router_env_names() | ops_env_names()
    assert not table_variables() - read, "documented, but nothing reads it"


def test_every_secret_that_can_come_from_a_file_is_listed() -> None:
    read = worker_env_names() | router_env_names() | ops_env_names()
    from_files = {n.removesuffix("_FILE") for n in read if n.endswith("_FILE")}
    [sentence] = [p for p in configuration().split("\n\n") if p.startswith("Secrets can come from")]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", sentence)) - {"NAME", "NAME_FILE"}
    assert listed == from_files
