"""`collab operator` as a command: its refusals come before it touches Kubernetes."""

from __future__ import annotations

from tests.cli import collab


class TestOperatorCommand:
    async def test_it_needs_the_admin_token(self) -> None:
        done = await collab("operator", "--namespace", "collab")
        assert done.returncode == 2
        assert "COLLAB_ADMIN_TOKEN is not set" in done.stderr

    async def test_it_is_listed_with_its_options(self) -> None:
        done = await collab("operator", "--help")
        assert done.returncode == 0
        for option in ("--namespace", "--interval", "--router", "--liveness"):
            assert option in done.stdout
