"""`collab import` → live edits → auto-commit → `collab export`, checked with the git CLI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cli import Done
from tests.cli import collab as run_collab
from tests.support import PNG, JsonClient, make_repo, run_worker, settings_for, sh
from worker.settings import StorageSettings


async def collab(storage: Path, *args: str, env: dict[str, str] | None = None) -> Done:
    return await run_collab(*args, env={"STORAGE_DIR": str(storage), **(env or {})})


class TestRoundTrip:
    async def test_import_edit_commit_export_keeps_history_and_bytes(
        self, tmp_path: Path, backend_env: dict[str, str]
    ) -> None:
        """On the embedded store and on the S3 server process (MinIO when configured)."""
        source, storage = tmp_path / "source", tmp_path / "storage"
        make_repo(source)
        env = {} if "STORAGE_DIR" in backend_env else backend_env
        imported = await collab(storage, "import", "demo", str(source), env=env)
        assert imported.returncode == 0, imported.stderr
        assert "import: files 5/5" in imported.stderr  # .collaboration is not imported
        settings = settings_for(
            StorageSettings.from_env({"STORAGE_DIR": str(storage), **env}),
            workspace_dir=tmp_path / "ws",
            cooldown_ms=3_600_000,
            admin_token="t",
        )
        async with run_worker(settings) as w, JsonClient.connect(w.url) as c:
            await c.join("demo", "alice")
            files = await c.get_files()
            assert set(files) == {"README.md", "logo.png", "src/m0.py", "src/m1.py", "src/m2.py"}
            reply = await c.request(
                {"type": "getFile", "data": {"path": "logo.png"}}, "fileContent"
            )
            assert reply["data"]["binary"] is True and reply["data"]["size"] == len(PNG)
            await c.file_op(type="update", path="README.md", content="# demo\nedited\n")
            await c.file_op(type="delete", path="src/m1.py")
            await c.file_op(type="rename", oldPath="src/m2.py", newPath="src/renamed.py")
            refused = await c.file_op(type="update", path="logo.png", content="text")
            assert refused["type"] == "error" and "binary" in refused["reason"]
            async with httpx.AsyncClient() as http:
                done = await http.post(
                    f"{w.http}/admin/sessions/demo/commit", headers={"authorization": "Bearer t"}
                )
            assert done.json()["result"] == "committed"
        out = tmp_path / "out"
        exported = await collab(storage, "export", "demo", str(out), env=env)
        assert exported.returncode == 0, exported.stderr
        log = sh(out, "git", "log", "--format=%an|%s")
        assert log.splitlines() == ["alice|Auto-commit by user alice", "dev|initial"]
        assert sh(out, "git", "status", "--porcelain") == ""
        sh(out, "git", "fsck", "--strict")
        status = sh(out, "git", "show", "-M", "--name-status", "--format=", "HEAD").splitlines()
        assert "D\tsrc/m1.py" in status and "M\tREADME.md" in status
        assert any(line.startswith("R100\tsrc/m2.py\tsrc/renamed.py") for line in status)
        assert (out / "logo.png").read_bytes() == PNG
        assert not (out / ".collaboration").exists()

    @pytest.mark.slow
    async def test_a_session_of_a_thousand_files(self, tmp_path: Path) -> None:
        source, storage = tmp_path / "source", tmp_path / "storage"
        make_repo(source, files=1000)
        imported = await collab(storage, "import", "big", str(source), "--json")
        assert imported.returncode == 0, imported.stderr
        assert '"textFiles": 1001' in imported.stdout and '"binaryFiles": 1' in imported.stdout
        settings = settings_for(StorageSettings(storage_dir=storage), workspace_dir=tmp_path / "ws")
        async with run_worker(settings) as w, JsonClient.connect(w.url) as c:
            await c.join("big", "bob")
            assert len(await c.get_files()) == 1002
            assert await c.get_file("src/m999.py") == "x = 999\n"
        out = tmp_path / "out"
        exported = await collab(storage, "export", "big", str(out))
        assert exported.returncode == 0, exported.stderr
        assert sh(out, "git", "status", "--porcelain") == ""
        assert len(sh(out, "git", "ls-files").split()) == 1002


class TestRefusals:
    async def test_an_existing_session_and_a_busy_destination_are_refused(
        self, tmp_path: Path
    ) -> None:
        source, storage = tmp_path / "source", tmp_path / "storage"
        make_repo(source)
        assert (await collab(storage, "import", "s", str(source))).returncode == 0
        again = await collab(storage, "import", "s", str(source))
        assert again.returncode == 1 and "already exists" in again.stderr
        busy = tmp_path / "busy"
        busy.mkdir()
        (busy / "x").write_text("x")
        export = await collab(storage, "export", "s", str(busy))
        assert export.returncode == 1 and "not an empty directory" in export.stderr
        missing = await collab(storage, "export", "nope", str(tmp_path / "new"))
        assert missing.returncode == 1 and "no session 'nope'" in missing.stderr
        hostile = await collab(storage, "import", "../x", str(source))
        assert hostile.returncode == 2
