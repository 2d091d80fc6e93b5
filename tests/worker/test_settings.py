"""Configuration from the environment: secrets from files (Swarm/Kubernetes), and one clear line
naming the variable when something is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.env import ConfigError
from ops.client import OpsError, Router
from router.settings import RouterSettings
from worker.settings import Settings

S3 = {"MINIO_ENDPOINT": "minio"}


def secret_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


class TestSecretsFromFiles:
    def test_every_secret_can_come_from_a_file_and_is_stripped(self, tmp_path: Path) -> None:
        env = {
            **S3,
            "MINIO_ACCESS_KEY_FILE": secret_file(tmp_path, "access", "AKIA\n"),
            "MINIO_SECRET_KEY_FILE": secret_file(tmp_path, "secret", "  s3cr3t  \n"),
            "ADMIN_TOKEN_FILE": secret_file(tmp_path, "admin", "new-token,old-token\n"),
            "AUTH_SECRET_FILE": secret_file(tmp_path, "auth", "jwt-secret\n"),
        }
        worker = Settings.from_env(env)
        assert worker.storage.minio_access_key == "AKIA"
        assert worker.storage.minio_secret_key == "s3cr3t"
        assert worker.admin_token == "new-token,old-token"
        assert worker.auth_secret == "jwt-secret"
        router = RouterSettings.from_env({**env, "WORKERS_DNS": "tasks.worker"})
        assert (router.admin_token, router.auth_secret) == ("new-token,old-token", "jwt-secret")

    def test_plain_values_still_work(self) -> None:
        env = {**S3, "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "s", "ADMIN_TOKEN": "t"}
        settings = Settings.from_env(env)
        assert (settings.storage.minio_access_key, settings.admin_token) == ("a", "t")

    def test_both_forms_at_once_are_refused(self, tmp_path: Path) -> None:
        env = {"ADMIN_TOKEN": "t", "ADMIN_TOKEN_FILE": secret_file(tmp_path, "t", "u")}
        with pytest.raises(ConfigError) as refused:
            Settings.from_env(env)
        assert str(refused.value) == (
            "invalid configuration: ADMIN_TOKEN and ADMIN_TOKEN_FILE are both set; keep one"
        )

    def test_a_missing_or_empty_file_names_the_variable_and_the_path(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope"
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({"AUTH_SECRET_FILE": str(missing)})
        assert refused.value.variable == "AUTH_SECRET_FILE"
        assert f"cannot be read ({missing})" in str(refused.value)
        empty = secret_file(tmp_path, "empty", "\n")
        with pytest.raises(ConfigError) as refused:
            RouterSettings.from_env({"WORKERS": "h:1", "ADMIN_TOKEN_FILE": empty})
        assert str(refused.value) == (
            f"invalid configuration: ADMIN_TOKEN_FILE names an empty file ({empty})"
        )

    def test_s3_keys_from_files_satisfy_the_endpoint_check(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({**S3, "MINIO_ACCESS_KEY_FILE": secret_file(tmp_path, "a", "a")})
        assert refused.value.variable == "MINIO_SECRET_KEY"

    def test_operator_token_from_a_file(self, tmp_path: Path) -> None:
        env = {"COLLAB_ADMIN_TOKEN_FILE": secret_file(tmp_path, "t", "ops-token\n")}
        assert Router.from_options("router:8080", env).token == "ops-token"
        with pytest.raises(OpsError) as refused:
            Router.from_options(None, {**env, "COLLAB_ADMIN_TOKEN": "x"})
        assert refused.value.exit_code == 2
        assert "COLLAB_ADMIN_TOKEN and COLLAB_ADMIN_TOKEN_FILE are both set" in str(refused.value)


class TestOneLine:
    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            ({"PORT": "http"}, "PORT"),
            ({"FLUSH_INTERVAL_MS": "0"}, "FLUSH_INTERVAL_MS"),
            ({"WORKER_ID": "a b"}, "WORKER_ID"),
            ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
            ({"COMPACT_SEGMENT_RATIO": "0"}, "COMPACT_SEGMENT_RATIO"),
            ({"COMPACT_SEGMENT_RATIO": "lots"}, "COMPACT_SEGMENT_RATIO"),
            ({"COMPACT_MIN_SEGMENT_BYTES": "-1"}, "COMPACT_MIN_SEGMENT_BYTES"),
            (
                {"MINIO_ENDPOINT": "minio:9000", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "s"},
                "MINIO_ENDPOINT",
            ),
        ],
    )
    def test_bad_values_name_their_variable(self, env: dict[str, str], variable: str) -> None:
        with pytest.raises(ConfigError) as refused:
            Settings.from_env(env)
        assert refused.value.variable == variable
        assert "\n" not in str(refused.value)

    def test_compaction_settings_read_their_variables(self) -> None:
        """Compaction by size: the ratio and the floor (defaults 1.0 and 64 KiB)."""
        assert (Settings().compact_segment_ratio, Settings().compact_min_segment_bytes) == (
            1.0,
            65536,
        )
        tuned = Settings.from_env(
            {"COMPACT_SEGMENT_RATIO": "0.5", "COMPACT_MIN_SEGMENT_BYTES": "1024"}
        )
        assert (tuned.compact_segment_ratio, tuned.compact_min_segment_bytes) == (0.5, 1024)
