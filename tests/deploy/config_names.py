"""The environment variables the code actually reads, found by asking it (not by a copied list).

Deployment tests check every variable a manifest sets against this, so a misspelt or retired
name in swarm.yml or the chart fails a test instead of being silently ignored in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cache

from ops.client import Router
from router.settings import RouterSettings
from worker.settings import Settings


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name looked up in it (``Mapping.get`` and ``in``
    go through ``__getitem__`` / ``__contains__``)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked.add(name)
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must look variables up by name, not list them")

    def __len__(self) -> int:
        return len(self.values)


def _asked(build: Callable[[Mapping[str, str]], object], values: Mapping[str, str]) -> set[str]:
    env = RecordingEnv(values)
    build(env)
    return env.asked


@cache
def worker_env_names() -> frozenset[str]:
    """Every variable ``collab worker`` reads (storage through S3 and through the local store)."""
    local = _asked(Settings.from_env, {})
    s3 = _asked(
        Settings.from_env,
        {"MINIO_ENDPOINT": "minio", "MINIO_ACCESS_KEY": "k", "MINIO_SECRET_KEY": "s"},
    )
    return frozenset(local | s3)


@cache
def router_env_names() -> frozenset[str]:
    """Every variable ``collab router`` reads."""
    return frozenset(_asked(RouterSettings.from_env, {"WORKERS_DNS": "tasks.worker"}))


@cache
def ops_env_names() -> frozenset[str]:
    """Every variable the operator commands read to reach a router."""
    asked = _asked(lambda env: Router.from_options(None, env), {"COLLAB_ADMIN_TOKEN": "t"})
    return frozenset(asked)
