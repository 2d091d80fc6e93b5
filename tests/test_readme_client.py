"""The README's Python client example: run as written against a live worker, and installable
the way the README says (`pip install '.[client]'`), as is docs/examples/edit.py."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import importlib.util
import re
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT, YjsClient, run_worker, settings_for
from worker.settings import StorageSettings

README = ROOT / "README.md"
EXAMPLE = ROOT / "docs" / "examples" / "edit.py"
SECTION = "From Python, pycrdt's own provider"
ROUTER = "http://localhost:8080"  # where the README's example connects (`make run`'s router)


def readme_section() -> str:
    """The README's paragraph about the Python client, up to the JSON protocol's."""
    text = README.read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n**JSON**", start)]


def readme_example() -> str:
    [code] = re.findall(r"```python\n(.*?)```", readme_section(), re.DOTALL)
    return code


def readme_extras() -> set[str]:
    """The extras of the install line the README gives next to the example."""
    [extras] = re.findall(r"pip install '\.\[([a-z0-9_,-]+)\]'", readme_section())
    return set(extras.split(","))


def installed_by(extras: set[str]) -> set[str]:
    """The distributions `pip install '.[extras]'` asks for by name, as pyproject.toml declares
    them: collab's dependencies and those of the extras (``collab[...]`` inside them followed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    wanted, todo = set(extras), [*project["dependencies"]]
    for extra in extras:
        todo.extend(optional[extra])
    names: set[str] = set()
    while todo:
        requirement = Requirement(todo.pop())
        if canonicalize_name(requirement.name) != "collab":
            names.add(canonicalize_name(requirement.name))
            continue
        for extra in requirement.extras - wanted:
            wanted.add(extra)
            todo.extend(optional[extra])
    return names


def imported_modules(code: str) -> set[str]:
    """Every module an ``import`` of ``code`` names, except the standard library's."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return {m for m in modules if m.partition(".")[0] not in sys.stdlib_module_names}


def providers(module: str) -> set[str]:
    """The installed distributions whose files include ``module``'s own file: for
    ``pycrdt.websocket.websocket`` that is pycrdt-websocket, not pycrdt, although both install
    into the ``pycrdt`` package."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} is not installed here"
    origin = Path(spec.origin).resolve()
    found = set()
    for name in importlib.metadata.packages_distributions().get(module.partition(".")[0], []):
        dist = importlib.metadata.distribution(name)
        if any(Path(str(dist.locate_file(f))).resolve() == origin for f in dist.files or ()):
            found.add(canonicalize_name(name))
    return found


class TestInstall:
    def test_the_readme_names_the_client_extra_and_the_tests_install_it(self) -> None:
        assert readme_extras() == {"client"}
        assert installed_by({"client"}) <= installed_by({"test"})

    def test_every_module_the_readme_example_imports_comes_with_what_it_installs(self) -> None:
        promised = installed_by(readme_extras())
        modules = imported_modules(readme_example())
        assert {"httpx_ws", "pycrdt", "pycrdt.websocket.websocket"} <= modules
        for module in sorted(modules):
            assert providers(module) & promised, (
                f"the README's example imports {module} (from {sorted(providers(module))}), "
                f"which `pip install '.[{','.join(sorted(readme_extras()))}]'` does not install"
            )

    def test_without_the_extra_the_example_would_not_import(self) -> None:
        """What the extra is for: collab's own dependencies lack the client's transport."""
        bare = installed_by(set())
        missing = [m for m in imported_modules(readme_example()) if not providers(m) & bare]
        assert sorted(missing) == ["httpx_ws", "pycrdt.websocket.websocket"]

    def test_docs_examples_edit_py_needs_nothing_more(self) -> None:
        promised = installed_by(readme_extras())
        for module in sorted(imported_modules(EXAMPLE.read_text())):
            assert providers(module) & promised, f"edit.py imports {module}: not installed"


async def test_the_readme_example_runs_as_written_and_its_text_arrives(tmp_path: Path) -> None:
    """The fenced block, with only its address changed, as a program of its own (its top-level
    ``async with`` inside ``asyncio.run``): a client already in the room sees its edit."""
    code = readme_example()
    assert code.count(ROUTER) == 1
    settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
    async with run_worker(settings) as worker:
        program = "\n".join(
            [
                "import asyncio",
                "",
                "async def main() -> None:",
                textwrap.indent(code.replace(ROUTER, worker.http), "    "),
                "asyncio.run(main())",
                "",
            ]
        )
        async with YjsClient.connect(worker.url, "my-session/src/app.py") as watcher:
            await asyncio.wait_for(watcher.synced.wait(), 5)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                program,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, (out + err).decode()
            await watcher.wait_text("hello")
