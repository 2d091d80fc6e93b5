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
