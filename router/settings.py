"""The router's one frozen Settings, built once at the edge (``RouterSettings.from_env``).

It reads the same variables as the worker where they mean the same thing (PORT, ADMIN_TOKEN,
MAX_MESSAGE_BYTES, LOG_FORMAT) with the same parsing rules (``contract.env``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from contract.env import (
    MIB,
    ConfigError,
    env_choice,
    env_int,
    env_secret,
    env_str,
    parse_address,
)


@dataclass(frozen=True)
class RouterSettings:
    port: int = 8080
    host: str = "0.0.0.0"
    router_id: str = field(default_factory=socket.gethostname)
    # Static membership (WORKERS) or a DNS name re-resolved every health round.
    workers: tuple[tuple[str, int], ...] = ()
    workers_dns: str | None = None
    workers_port: int = 8081
    admin_token: str | None = None
    auth_secret: str | None = None
    max_message_bytes: int = 4 * MIB
    log_format: str = "text"
    # Not in the seed's table: how often workers are checked (DESIGN §8: about every second),
    # and how long one check, a connection to a worker, or a hand-off may take.
    health_interval_ms: int = 1_000
    health_timeout_ms: int = 1_000
    connect_timeout_ms: int = 3_000
    handoff_timeout_ms: int = 10_000
    # How long a JSON client may take to send its join (not in the environment: no one has
    # needed to tune it; tests shorten it).
    join_timeout_ms: int = 60_000

    def __post_init__(self) -> None:
        if not self.workers and not self.workers_dns:
            raise ConfigError(
                "WORKERS", "or WORKERS_DNS must be set: the router needs workers to route to"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RouterSettings:
        env = os.environ if env is None else env
        raw_workers = env_str(env, "WORKERS") or ""
        workers = tuple(
            parse_address(item, "WORKERS") for item in raw_workers.split(",") if item.strip()
        )
        return cls(
            port=env_int(env, "PORT", 8080, minimum=1),
            host=env_str(env, "COLLAB_HOST", "0.0.0.0") or "0.0.0.0",
            router_id=env_str(env, "ROUTER_ID") or socket.gethostname(),
            workers=workers,
            workers_dns=env_str(env, "WORKERS_DNS"),
            workers_port=env_int(env, "WORKERS_PORT", 8081, minimum=1),
            admin_token=env_secret(env, "ADMIN_TOKEN"),
            auth_secret=env_secret(env, "AUTH_SECRET"),
            max_message_bytes=env_int(env, "MAX_MESSAGE_BYTES", 4 * MIB, minimum=1024),
            log_format=env_choice(env, "LOG_FORMAT", "text", ("text", "json")),
            health_interval_ms=env_int(env, "HEALTH_INTERVAL_MS", 1_000, minimum=50),
            health_timeout_ms=env_int(env, "HEALTH_TIMEOUT_MS", 1_000, minimum=50),
            connect_timeout_ms=env_int(env, "CONNECT_TIMEOUT_MS", 3_000, minimum=50),
            handoff_timeout_ms=env_int(env, "HANDOFF_TIMEOUT_MS", 10_000, minimum=100),
        )
