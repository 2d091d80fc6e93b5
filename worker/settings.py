"""One frozen Settings, built once at the edge (``Settings.from_env``).

The environment names and defaults are the seed's (DESIGN §4). A bad value stops the process at
start with one line that names the variable (the rules are ``contract.env``'s, as the router's).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contract.env import (
    MIB,
    ConfigError,
    env_bool,
    env_choice,
    env_int,
    env_secret,
    env_str,
)
from contract.ids import valid_worker_id

_WILDCARDS = ("", "0.0.0.0", "::")


def _this_host_ip() -> str:
    """This host's address as others see it (a Pod's IP, a Swarm task's IP)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@dataclass(frozen=True)
class StorageSettings:
    """Where durable state lives: embedded directory, or MinIO/S3 when an endpoint is set."""

    storage_dir: Path = Path("./.collab/storage")
    minio_endpoint: str | None = None
    minio_port: int = 9000
    minio_bucket: str = "sessions"
    minio_access_key: str | None = None
    minio_secret_key: str | None = None
    minio_secure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageSettings:
        endpoint = env_str(env, "MINIO_ENDPOINT")
        access = env_secret(env, "MINIO_ACCESS_KEY")
        secret = env_secret(env, "MINIO_SECRET_KEY")
        if endpoint and (not access or not secret):
            missing = "MINIO_ACCESS_KEY" if not access else "MINIO_SECRET_KEY"
            raise ConfigError(missing, "must be set when MINIO_ENDPOINT is set")
        if endpoint and ("/" in endpoint or ":" in endpoint):
            raise ConfigError(
                "MINIO_ENDPOINT",
                f"must be a bare host name (port goes in MINIO_PORT), got {endpoint!r}",
            )
        return cls(
            storage_dir=Path(env_str(env, "STORAGE_DIR", "./.collab/storage") or "."),
            minio_endpoint=endpoint,
            minio_port=env_int(env, "MINIO_PORT", 9000, minimum=1),
            minio_bucket=env_str(env, "MINIO_BUCKET", "sessions") or "sessions",
            minio_access_key=access,
            minio_secret_key=secret,
            minio_secure=env_bool(env, "MINIO_SECURE", False),
        )

    def describe(self) -> str:
        if self.minio_endpoint:
            scheme = "https" if self.minio_secure else "http"
            return f"s3 {scheme}://{self.minio_endpoint}:{self.minio_port}/{self.minio_bucket}"
        return f"local {self.storage_dir}"


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs; tests build it directly."""

    port: int = 8081
    host: str = "0.0.0.0"
    worker_id: str = field(default_factory=socket.gethostname)
    workspace_dir: Path = Path("/workspace")
    cooldown_ms: int = 300_000
    flush_interval_ms: int = 500
    session_idle_ms: int = 30_000
    max_message_bytes: int = 4 * MIB
    # Limits (``worker.limits``): one update's bytes, and the bytes a session's documents may
    # grow to; what would pass one is refused (close 4413, or an ``error``) and not applied.
    max_update_bytes: int = 4 * MIB
    max_doc_bytes: int = 32 * MIB
    admin_token: str | None = None
    auth_secret: str | None = None
    log_format: str = "text"
    storage: StorageSettings = field(default_factory=StorageSettings)
    # Not in the seed's table: how far a client may fall behind before it is disconnected.
    send_buffer_bytes: int = 8 * MIB
    # The operations log is written at most this often per session (and on unload/drain), so
    # an edit burst is one entry, not one per group commit.
    log_interval_ms: int = 5_000
    # SIGTERM/drain: how long to keep retrying flushes before closing clients anyway.
    drain_timeout_ms: int = 20_000
    # Compact a live session once this many segments have piled up since its last compaction,
    # or once the segments written since its last snapshot outweigh COMPACT_SEGMENT_RATIO times
    # that snapshot and COMPACT_MIN_SEGMENT_BYTES (docs/storage.md "Compaction").
    compact_every_segments: int = 64
    compact_segment_ratio: float = 1.0
    compact_min_segment_bytes: int = 64 * 1024
    # Ownership (docs/storage.md "One live owner"): the lease's time to live, and the address
    # other workers reach this one at (None: COLLAB_HOST, or this host's IP when that is a
    # wildcard).
    lease_ttl_ms: int = 10_000
    advertise_host: str | None = None
    # "durable": a write is acknowledged once it is in storage; "applied": at once (faster,
    # and a SIGKILL may lose what was acknowledged in the last FLUSH_INTERVAL_MS).
    ack_mode: str = "durable"

    @property
    def git_caches(self) -> Path:
        """This worker's local git caches: one directory per git session it holds, removed
        when the session leaves, all of them at start. Per worker, so that workers sharing a
        WORKSPACE_DIR (``collab up``) never remove a cache another one is using."""
        return self.workspace_dir / self.worker_id

    def git_cache(self, session_id: str) -> Path:
        """The bare repository caching ``session_id``'s history (packs from storage)."""
        return self.git_caches / session_id / "repo.git"

    @property
    def advertise_address(self) -> str:
        host = self.advertise_host or (
            self.host if self.host not in _WILDCARDS else _this_host_ip()
        )
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        worker_id = env_str(env, "WORKER_ID") or socket.gethostname()
        if not valid_worker_id(worker_id):
            raise ConfigError(
                "WORKER_ID",
                f"must be 1-64 chars of letters, digits, '.', '_', '-', got {worker_id!r}",
            )
        settings = cls(
            port=env_int(env, "PORT", 8081, minimum=1),
            host=env_str(env, "COLLAB_HOST", "0.0.0.0") or "0.0.0.0",
            worker_id=worker_id,
            workspace_dir=Path(env_str(env, "WORKSPACE_DIR", "/workspace") or "/workspace"),
            cooldown_ms=env_int(env, "COOLDOWN_MS", 300_000, minimum=1),
            flush_interval_ms=env_int(env, "FLUSH_INTERVAL_MS", 500, minimum=1),
            session_idle_ms=env_int(env, "SESSION_IDLE_MS", 30_000, minimum=0),
            max_message_bytes=env_int(env, "MAX_MESSAGE_BYTES", 4 * MIB, minimum=1024),
            max_update_bytes=env_int(env, "MAX_UPDATE_BYTES", 4 * MIB, minimum=1024),
            max_doc_bytes=env_int(env, "MAX_DOC_BYTES", 32 * MIB, minimum=1024),
            drain_timeout_ms=env_int(env, "DRAIN_TIMEOUT_MS", 20_000, minimum=0),
            log_interval_ms=env_int(env, "LOG_INTERVAL_MS", 5_000, minimum=1),
            admin_token=env_secret(env, "ADMIN_TOKEN"),
            auth_secret=env_secret(env, "AUTH_SECRET"),
            log_format=env_choice(env, "LOG_FORMAT", "text", ("text", "json")),
            storage=StorageSettings.from_env(env),
            lease_ttl_ms=env_int(env, "LEASE_TTL_MS", 10_000, minimum=1_000),
            advertise_host=env_str(env, "ADVERTISE_HOST"),
            ack_mode=env_choice(env, "ACK_MODE", "durable", ("durable", "applied")),
            compact_segment_ratio=_env_ratio(env, "COMPACT_SEGMENT_RATIO", 1.0),
            compact_min_segment_bytes=env_int(env, "COMPACT_MIN_SEGMENT_BYTES", 64 * 1024),
        )
        if not 1 <= settings.port <= 65535:
            raise ConfigError("PORT", f"must be 1-65535, got {settings.port}")
        return settings


def _env_ratio(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env_str(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(name, f"must be a positive number, got {raw!r}")
    return value
