"""The packages' layering: router and worker share a contract, not each other's internals.

``contract`` is what both programs must do the same way; ``ops`` (the CLI) may use all three.
A change inside ``worker/`` must not be able to break the router silently, and the router must
not load the worker's dependencies (pycrdt, dulwich, the S3 client) just to start.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

# package -> the first-party packages it must never import
FORBIDDEN = {
    "router": {"worker", "ops"},
    "worker": {"router", "ops"},
    "contract": {"worker", "router", "ops"},
}


def imported_packages(path: Path, package: str) -> set[str]:
    """Top-level names a module imports, with relative imports resolved inside ``package``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").split(".")[0])
    return names


def violations(root: Path) -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            bad = imported_packages(path, package) & forbidden
            found.extend(f"{path.relative_to(root)} imports {name}" for name in sorted(bad))
    return found


class TestLayering:
    def test_no_package_imports_what_its_layer_forbids(self) -> None:
        """router ↛ worker, worker ↛ router, contract ↛ either (nor ops)."""
        assert violations(ROOT) == []

    def test_the_check_sees_a_cross_import(self, tmp_path: Path) -> None:
        """A planted ``from worker.session import Session`` in the router is reported."""
        for package in FORBIDDEN:
            (tmp_path / package).mkdir()
            (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / "router" / "sneaky.py").write_text("from worker.session import Session\n")
        (tmp_path / "contract" / "deep.py").write_text("import router.ring\n")
        assert violations(tmp_path) == [
            "router/sneaky.py imports worker",
            "contract/deep.py imports router",
        ]

    @pytest.mark.parametrize("module", ["router.__main__", "router.server"])
    def test_the_router_starts_without_the_workers_dependencies(self, module: str) -> None:
        """Importing the router loads neither the worker package nor pycrdt, dulwich, minio."""
        probe = (
            f"import {module}, sys; "
            "print(sorted(m for m in ('worker', 'pycrdt', 'dulwich', 'miniopy_async') "
            "if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "[]", out.stderr


def module_imports(root: Path, package: str) -> dict[str, set[str]]:
    """``package``'s modules, each with the modules of the same package it imports (also under
    ``TYPE_CHECKING``: a cycle drawn only for the type checker is still a cycle to a reader)."""
    base = root / package
    modules: dict[str, set[str]] = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        name = ".".join(parts)
        here = parts if is_init else parts[:-1]  # the package relative imports start from
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    start = here[: len(here) - node.level + 1]
                    target = ".".join([*start, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        modules[name] = found
    return {
        name: {m for m in found if m in modules and m != name} for name, found in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (Tarjan's strongly connected components of 2 or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


class TestNoCycles:
    @pytest.mark.parametrize("package", ["worker", "router", "contract", "ops"])
    def test_no_module_imports_one_that_imports_it_back(self, package: str) -> None:
        """Inside each package, imports form no circle (a module's dependencies can be read
        without reading the module itself)."""
        assert cycles(module_imports(ROOT, package)) == []

    def test_the_check_sees_a_circle(self, tmp_path: Path) -> None:
        """A planted manager → handoff → manager circle (the latter under TYPE_CHECKING) is
        reported; a one-way import is not."""
        package = tmp_path / "worker"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "manager.py").write_text("from .handoff import HandOff\nfrom . import room\n")
        (package / "handoff.py").write_text(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .manager import M\n"
        )
        (package / "room.py").write_text("import worker.client\n")
        (package / "client.py").write_text("")
        assert cycles(module_imports(tmp_path, "worker")) == [["worker.handoff", "worker.manager"]]
