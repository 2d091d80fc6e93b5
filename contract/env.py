"""Reading configuration from the environment: one rule per kind of value, shared by every process.

A bad value stops the process at start with one line that names the variable, instead of
surfacing as a strange failure later. Only settings classes (``Settings.from_env``,
``RouterSettings.from_env``) and the CLI's edge read the environment, through these helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A configuration value is missing or malformed; ``str()`` is the one line to print."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"invalid configuration: {variable} {problem}")
        self.variable = variable


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name, "").strip()
    return raw or default


def env_secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from ``NAME``, or from the file named by ``NAME_FILE`` (Docker/Swarm secrets
    under /run/secrets, Kubernetes secret volumes); surrounding whitespace is stripped.

    Setting both is refused: which one wins would be a guess.
    """
    path = env_str(env, f"{name}_FILE")
    value = env_str(env, name)
    if path is None:
        return value
    if value is not None:
        raise ConfigError(name, f"and {name}_FILE are both set; keep one")
    try:
        content = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}_FILE", f"cannot be read ({path}): {exc}") from None
    if not content:
        raise ConfigError(f"{name}_FILE", f"names an empty file ({path})")
    return content


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def rotating_values(value: str | None) -> tuple[str, ...]:
    """``ADMIN_TOKEN`` / ``AUTH_SECRET`` may list comma-separated values while one replaces
    another: all are accepted, the first is the one used for sending or signing."""
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def parse_address(value: str, variable: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → (host, port); a bad entry names the variable."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(variable, f"entries must be host:port, got {value.strip()!r}")
    return host, int(port)
