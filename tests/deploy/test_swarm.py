"""swarm.yml and what it delivers (deploy/swarm/*, the dashboard and the alerts): validated by
the docker CLI's own stack loader (offline, no engine), then checked against the code that
reads it: env names, the worker's and router's real settings parsers, ports, drain time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from contract.auth import Authenticator
from router.settings import RouterSettings
from tests.deploy.config_names import router_env_names, worker_env_names
from tests.deploy.files_support import (
    ALERTS,
    DASHBOARD,
    ROOT,
    SWARM,
    duration,
    load_json,
    load_yaml,
)
from worker.settings import Settings

pytestmark = pytest.mark.deploy

COLLAB_IMAGE_DEFAULT = "${COLLAB_IMAGE:-collab:latest}"
# The original's README deploys the stack as `collaborative-session` and names its services in
# `docker service logs/scale/update/ps collaborative-session_collaborative-worker` and
# `docker ps -f name=collaborative-session_minio`: ours answer to the same names.
STACK = "collaborative-session"
WORKER = "collaborative-worker"
SEED_SERVICES = (WORKER, "minio")
# Variables swarm.yml interpolates: the tests set them or leave them unset, never inherit them.
STACK_VARIABLES = ("COLLAB_IMAGE", "COLLAB_CONFIG_VERSION", "COLLAB_AUTH_SECRET_FILE")
# docs/deploy.md's switch that runs the stack without client authentication, as the original.
OPEN_DEPLOY = f"COLLAB_AUTH_SECRET_FILE= docker stack deploy -c swarm.yml {STACK}"
PARSERS = (("router", RouterSettings.from_env), (WORKER, Settings.from_env))
SECRETISH = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
GIB = 1024**3
MIB = 1024**2


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    data = load_yaml(SWARM)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(stack: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = stack["services"]
    return found


def stack_config(**variables: str) -> dict[str, Any]:
    """`docker stack config`'s output: schema-checked, interpolated, units normalized, with
    ``variables`` in the environment of the deploying shell (as ``VAR=value docker stack ...``)."""
    docker = shutil.which("docker")
    assert docker, "the docker CLI (client only) is needed to validate swarm.yml"
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}
    env["COLLAB_IMAGE"] = "registry.example/collab:1.2.3"
    env.update(variables)
    result = subprocess.run(
        [docker, "stack", "config", "-c", str(SWARM)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",  # paths must be relative to the file, not to where it is deployed from
        timeout=60,
    )
    assert result.returncode == 0, f"docker stack config rejected swarm.yml: {result.stderr}"
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def normalized() -> dict[str, Any]:
    """The stack as `docker stack deploy -c swarm.yml collaborative-session` deploys it."""
    return stack_config()


@pytest.fixture(scope="module")
def envs(normalized: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each service's environment after docker's variable interpolation."""
    return {name: env_of(service) for name, service in normalized["services"].items()}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write environment as a mapping"
    for name, value in env.items():
        assert isinstance(value, str), f"{name}: quote the value ({value!r}), env is text"
    return env


def secret_names(service: dict[str, Any]) -> dict[str, str]:
    """{mount path: secret name} of a service's secrets."""
    out = {}
    for s in service.get("secrets") or []:
        source = s if isinstance(s, str) else s["source"]
        target = source if isinstance(s, str) else s.get("target", source)
        path = target if target.startswith("/") else f"/run/secrets/{target}"
        out[path] = source
    return out


def config_mounts(stack: dict[str, Any], service: str) -> dict[str, Path]:
    """{target path in the container: file in the repo} of a service's configs."""
    out = {}
    for c in stack["services"][service].get("configs") or []:
        source = c if isinstance(c, str) else c["source"]
        target = f"/{source}" if isinstance(c, str) else c.get("target", f"/{source}")
        out[target] = (SWARM.parent / stack["configs"][source]["file"]).resolve()
    return out


def mount_of(stack: dict[str, Any], service: str, path: Path) -> str:
    (target,) = [t for t, f in config_mounts(stack, service).items() if f == path.resolve()]
    return target


def mount_file(stack: dict[str, Any], service: str, flag: str) -> Path:
    """The repo file mounted where a command-line flag (``--flag=PATH``) points."""
    (arg,) = [a for a in stack["services"][service]["command"] if a.startswith(flag)]
    return config_mounts(stack, service)[arg.split("=", 1)[1]]


def real_env(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """A service's environment as a task sees it: templates filled in, secrets as files."""
    out = {}
    for name, value in env.items():
        value = value.replace("{{.Task.Slot}}", "5").replace(
            "{{.Task.ID}}",
            "k3b2x9q7w1m4n8v6c5z0a2s7d",  # Swarm task ids are 25 characters
        )
        if name.endswith("_FILE") and value.startswith("/run/secrets/"):
            secret = tmp / PurePosixPath(value).name
            secret.write_text(f"value-of-{secret.name}\n")
            value = str(secret)
        out[name] = value
    return out


def memory(value: str | int) -> int:
    return int(value)  # docker stack config writes bytes


# ------------------------------------------------------------------------------- schema


def test_docker_accepts_the_stack_file(normalized: dict[str, Any]) -> None:
    assert set(normalized["services"]) == {"router", WORKER, "minio", "prometheus", "grafana"}
    for name in ("router", WORKER):
        assert normalized["services"][name]["image"] == "registry.example/collab:1.2.3"


def test_the_original_readmes_service_names_exist(stack: dict[str, Any]) -> None:
    """Its `docker service ... collaborative-session_collaborative-worker` commands work."""
    for name in SEED_SERVICES:
        assert name in stack["services"], f"{STACK}_{name} of the original's README is missing"


def test_every_stack_object_the_docs_name_exists(stack: dict[str, Any]) -> None:
    """`collaborative-session_X` in the README, the docs and swarm.yml's comments is a service
    or a network of this stack, and the stack is deployed under that name."""
    pages = [ROOT / "README.md", SWARM, *sorted((ROOT / "docs").glob("*.md"))]
    named: dict[str, set[str]] = {}
    for page in pages:
        for found in re.findall(rf"\b{STACK}_([a-z0-9-]+)", page.read_text()):
            named.setdefault(found, set()).add(page.name)
    known = set(stack["services"]) | set(stack["networks"])
    unknown = {name: sorted(where) for name, where in named.items() if name not in known}
    assert not unknown, f"no such service or network in swarm.yml: {unknown}"
    assert WORKER in named, "the docs never name the worker service"
    deploy_lines = [
        line
        for page in pages
        for line in page.read_text().splitlines()
        if "docker stack deploy -c" in line
    ]
    assert deploy_lines and all(line.rstrip().endswith(STACK) for line in deploy_lines)


def test_collab_image_is_set_by_the_operator_and_third_party_images_are_pinned(
    services: dict[str, Any],
) -> None:
    for name in ("router", WORKER):
        assert services[name]["image"] == COLLAB_IMAGE_DEFAULT
    for name in ("minio", "prometheus", "grafana"):
        image = services[name]["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: pin {image}"
    assert services["minio"]["image"].split(":")[1].startswith("RELEASE.")


def test_one_overlay_network_for_everything(stack: dict[str, Any]) -> None:
    (network,) = stack["networks"]
    assert stack["networks"][network]["driver"] == "overlay"
    for name, service in stack["services"].items():
        assert service["networks"] == [network], name


# ------------------------------------------------------------------------------- router


def test_router_publishes_its_port_and_runs_two_replicas(services: dict[str, Any]) -> None:
    router = services["router"]
    port = int(env_of(router)["PORT"])
    assert router["command"] == ["router"]
    (published,) = router["ports"]
    assert published["target"] == port and published["published"] == port
    assert published.get("mode", "ingress") == "ingress"
    assert router["deploy"]["replicas"] == 2


def test_router_finds_the_workers_through_swarm_dns(
    envs: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    router_env = envs["router"]
    worker_port = int(envs[WORKER]["PORT"])
    assert router_env["WORKERS_DNS"] == f"tasks.{WORKER}"
    assert int(router_env["WORKERS_PORT"]) == worker_port
    settings = RouterSettings.from_env(real_env(router_env, tmp_path))
    assert settings.workers_dns == f"tasks.{WORKER}" and settings.workers_port == worker_port
    assert settings.port == int(router_env["PORT"])
    assert settings.admin_token and settings.auth_secret, "token and secret come from files"


# ------------------------------------------------------------------------------- client auth


def test_routers_and_workers_require_client_tokens_by_default(
    envs: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    for name, parse in PARSERS:
        secret = parse(real_env(envs[name], tmp_path)).auth_secret
        assert Authenticator(secret).enabled, name


def test_one_documented_variable_runs_the_stack_open(
    normalized: dict[str, Any], tmp_path: Path
) -> None:
    """`COLLAB_AUTH_SECRET_FILE= docker stack deploy ...`: routers and workers start without
    AUTH_SECRET, so clients that send no token (the original's) are served; nothing else moves."""
    opened = stack_config(COLLAB_AUTH_SECRET_FILE="")
    for name, parse in PARSERS:
        env = env_of(opened["services"][name])
        assert env["AUTH_SECRET_FILE"] == ""
        secret = parse(real_env(env, tmp_path)).auth_secret
        assert secret is None and not Authenticator(secret).enabled, name

    def without_auth(stack: dict[str, Any]) -> dict[str, Any]:
        services = {n: dict(s) for n, s in stack["services"].items()}
        for name, _ in PARSERS:
            services[name]["environment"] = {
                k: v for k, v in services[name]["environment"].items() if k != "AUTH_SECRET_FILE"
            }
        return {**stack, "services": services}

    assert without_auth(opened) == without_auth(normalized)
    for page in (SWARM, ROOT / "docs" / "deploy.md"):
        assert OPEN_DEPLOY in page.read_text(), f"{page.name}: say how to run open"


# ------------------------------------------------------------------------------- worker


def test_workers_are_five_dnsrr_replicas_without_published_ports(
    services: dict[str, Any],
) -> None:
    worker = services[WORKER]
    assert worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] == 5
    # dnsrr: tasks.collaborative-worker resolves to every task; no VIP in front of them.
    assert worker["deploy"]["endpoint_mode"] == "dnsrr"
    assert "ports" not in worker


def test_worker_id_is_unique_per_task_and_valid(
    envs: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    value = envs[WORKER]["WORKER_ID"]
    # Per task, not per slot: start-first runs the old and new task of a slot side by side.
    assert "{{.Task.ID}}" in value, value
    settings = Settings.from_env(real_env(envs[WORKER], tmp_path))
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", settings.worker_id), settings.worker_id
    assert "duplicate_worker_id" in SWARM.read_text(), "say why in a comment"


def test_worker_environment_is_accepted_by_the_worker(
    services: dict[str, Any], envs: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    env = envs[WORKER]
    settings = Settings.from_env(real_env(env, tmp_path))
    assert settings.port == int(env["PORT"])
    assert settings.log_format == "json"
    # Storage is the stack's MinIO service on its default port.
    assert env["MINIO_ENDPOINT"] in services and env["MINIO_ENDPOINT"] == "minio"
    assert env["MINIO_PORT"] == "9000"
    assert "--address" not in services["minio"]["command"]


def test_env_names_are_ones_the_code_reads(services: dict[str, Any]) -> None:
    for name, known in (("router", router_env_names()), (WORKER, worker_env_names())):
        unknown = set(env_of(services[name])) - known
        assert not unknown, f"{name} sets variables the code never reads: {sorted(unknown)}"


def test_both_services_set_port_so_the_image_healthcheck_probes_the_right_one(
    services: dict[str, Any],
) -> None:
    for name in ("router", WORKER):
        assert env_of(services[name])["PORT"].isdigit()
        # The image's HEALTHCHECK (`collab health`, reads PORT) applies: not turned off here.
        assert "healthcheck" not in services[name] or not services[name]["healthcheck"].get(
            "disable"
        )


# ------------------------------------------------------------------------------- updates


@pytest.mark.parametrize("name", ["router", WORKER])
def test_rolling_updates_start_the_new_task_first(services: dict[str, Any], name: str) -> None:
    deploy = services[name]["deploy"]
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["update_config"]["parallelism"] == 1
    assert deploy["rollback_config"]["order"] == "start-first"


def test_worker_grace_period_covers_the_drain(
    services: dict[str, Any], envs: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    worker = services[WORKER]
    env = envs[WORKER]
    assert "DRAIN_TIMEOUT_MS" in env, "set the drain bound explicitly next to the grace period"
    drain_s = Settings.from_env(real_env(env, tmp_path)).drain_timeout_ms / 1000
    grace_s = duration(worker["stop_grace_period"]).total_seconds()
    assert grace_s >= drain_s + 5, f"stop_grace_period {grace_s}s < drain {drain_s}s + margin"


def test_router_grace_period_lets_it_close_connections(services: dict[str, Any]) -> None:
    grace_s = duration(services["router"]["stop_grace_period"]).total_seconds()
    assert 5 <= grace_s <= 60


@pytest.mark.parametrize("name", ["minio", "prometheus", "grafana"])
def test_single_volume_services_stop_before_starting(services: dict[str, Any], name: str) -> None:
    assert services[name]["deploy"]["replicas"] == 1
    assert services[name]["deploy"]["update_config"]["order"] == "stop-first"


# ------------------------------------------------------------------------------- resources


def test_resource_limits_follow_the_seed(normalized: dict[str, Any]) -> None:
    svc = normalized["services"]
    for name, service in svc.items():
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and memory(limits["memory"]) > 0, name
    # Seed: per worker CPU 1-2 cores, memory 2-4 GB.
    worker = svc[WORKER]["deploy"]["resources"]
    assert float(worker["limits"]["cpus"]) == 2 and memory(worker["limits"]["memory"]) == 4 * GIB
    assert float(worker["reservations"]["cpus"]) == 1
    assert memory(worker["reservations"]["memory"]) == 2 * GIB
    # Seed: MinIO CPU 0.5-1 core, memory 512 MB-2 GB.
    minio = svc["minio"]["deploy"]["resources"]
    assert float(minio["limits"]["cpus"]) == 1 and memory(minio["limits"]["memory"]) == 2 * GIB
    assert float(minio["reservations"]["cpus"]) == 0.5
    assert memory(minio["reservations"]["memory"]) == 512 * MIB
    for name in ("router", "prometheus", "grafana"):
        res = svc[name]["deploy"]["resources"]
        assert float(res["reservations"]["cpus"]) <= float(res["limits"]["cpus"]) <= 1, name
        assert memory(res["limits"]["memory"]) <= 1 * GIB, name


# ------------------------------------------------------------------------------- secrets


def test_secrets_are_external_and_never_inlined(
    stack: dict[str, Any], envs: dict[str, dict[str, str]]
) -> None:
    assert stack["secrets"], "no secrets"
    for name, secret in stack["secrets"].items():
        assert secret == {"external": True}, f"secret {name}: create it with docker secret create"
    for name, env in envs.items():
        for var, value in env.items():
            bare = var.removesuffix("_FILE").rstrip("_")
            if SECRETISH.search(bare):
                assert var.endswith("_FILE"), f"{name}: {var} holds a secret in plain environment"
                assert value.startswith("/run/secrets/"), f"{name}: {var}={value}"
    # Nor anywhere else in a service (labels, command lines, healthchecks...).
    for name, service in stack["services"].items():
        for key, value in walk(service):
            if isinstance(value, str) and SECRETISH.search(key.rstrip("_")):
                raise AssertionError(f"{name}: {key}={value!r} looks like an inlined secret")
            if isinstance(value, str) and re.match(r"^[A-Z_]*(KEY|TOKEN|SECRET|PASSWORD)=", value):
                raise AssertionError(f"{name}: {value!r} looks like an inlined secret")


def walk(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) of every scalar in a YAML tree (list items get their list's key)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)
    else:
        yield key, node


def test_every_file_variable_points_at_a_secret_of_its_own_service(
    stack: dict[str, Any], envs: dict[str, dict[str, str]]
) -> None:
    for name, service in stack["services"].items():
        mounted = secret_names(service)
        for source in mounted.values():
            assert source in stack["secrets"], f"{name}: secret {source} is not declared"
        for var, value in envs[name].items():
            if var.endswith("_FILE"):
                assert value in mounted, f"{name}: {var}={value} is not a secret of {name}"


def test_workers_routers_and_minio_share_the_same_secrets(
    services: dict[str, Any], envs: dict[str, dict[str, str]]
) -> None:
    worker, router, minio = (envs[n] for n in (WORKER, "router", "minio"))
    files = {
        n: {
            var: secret_names(services[n])[path]
            for var, path in envs[n].items()
            if var.endswith("_FILE")
        }
        for n in (WORKER, "router", "minio")
    }
    assert worker and router and minio
    for var in ("ADMIN_TOKEN_FILE", "AUTH_SECRET_FILE"):  # the router calls workers' admin API
        assert files[WORKER][var] == files["router"][var]
    assert files["minio"]["MINIO_ROOT_USER_FILE"] == files[WORKER]["MINIO_ACCESS_KEY_FILE"]
    assert files["minio"]["MINIO_ROOT_PASSWORD_FILE"] == files[WORKER]["MINIO_SECRET_KEY_FILE"]
    grafana = env_of(services["grafana"])
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE" in grafana


# ------------------------------------------------------------------------------- MinIO


def test_minio_keeps_its_data_on_a_volume_and_has_a_health_check(
    stack: dict[str, Any], normalized: dict[str, Any]
) -> None:
    minio = stack["services"]["minio"]
    assert minio["command"][:2] == ["server", "/data"]
    (volume,) = normalized["services"]["minio"]["volumes"]
    assert volume["type"] == "volume" and volume["target"] == "/data"
    assert volume["source"] in stack["volumes"]
    test = minio["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:] == ["mc", "ready", "local"]
    for key in ("interval", "timeout"):
        assert duration(minio["healthcheck"][key]).total_seconds() > 0
    assert minio["deploy"]["placement"]["constraints"], "the volume is local to one node"


# ------------------------------------------------------------------------------- configs


def test_every_config_file_exists(stack: dict[str, Any]) -> None:
    for name, config in stack["configs"].items():
        path = SWARM.parent / config["file"]
        assert path.is_file(), f"config {name}: {config['file']} does not exist"
        assert "COLLAB_CONFIG_VERSION" in config.get("name", ""), (
            f"config {name}: configs are immutable; version their names"
        )
    for name, service in stack["services"].items():
        for c in service.get("configs") or []:
            assert c["source"] in stack["configs"], f"{name}: config {c['source']} undeclared"


def test_prometheus_discovers_workers_and_routers_through_dns(stack: dict[str, Any]) -> None:
    config_path = mount_file(stack, "prometheus", "--config.file=")
    assert config_path == (ROOT / "deploy" / "swarm" / "prometheus.yml").resolve()
    config = load_yaml(config_path)
    assert duration(config["global"]["scrape_interval"]).total_seconds() <= 30
    discovered: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs") or []:
            assert sd["type"] == "A"
            for name in sd["names"]:
                prefix, _, service = name.partition(".")
                assert prefix == "tasks", f"{name}: use tasks.<service> (one record per task)"
                assert service in stack["services"], name
                discovered[service] = sd["port"]
    services = stack["services"]
    assert discovered == {
        WORKER: int(env_of(services[WORKER])["PORT"]),
        "router": int(env_of(services["router"])["PORT"]),
    }


def test_prometheus_loads_the_alert_rules_from_where_they_are_mounted(
    stack: dict[str, Any],
) -> None:
    config = load_yaml(mount_file(stack, "prometheus", "--config.file="))
    rules_target = mount_of(stack, "prometheus", ALERTS)
    assert config["rule_files"] == [rules_target]


def test_grafana_datasource_is_the_one_the_dashboard_defaults_to(stack: dict[str, Any]) -> None:
    mounts = config_mounts(stack, "grafana")
    sources = [
        load_yaml(f)
        for t, f in mounts.items()
        if t.startswith("/etc/grafana/provisioning/datasources/")
    ]
    (provisioning,) = sources
    (datasource,) = provisioning["datasources"]
    (variable,) = [
        v for v in load_json(DASHBOARD)["templating"]["list"] if v["type"] == "datasource"
    ]
    assert datasource["type"] == "prometheus" == variable["query"]
    assert datasource["uid"] == variable["current"]["value"]
    host_port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/?", datasource["url"])
    assert host_port and host_port.group(1) in stack["services"]
    assert host_port.group(2) == "9090"


def test_grafana_dashboard_provider_reads_the_folder_where_the_dashboard_is_mounted(
    stack: dict[str, Any],
) -> None:
    mounts = config_mounts(stack, "grafana")
    (provider_file,) = [
        f for t, f in mounts.items() if t.startswith("/etc/grafana/provisioning/dashboards/")
    ]
    (provider,) = load_yaml(provider_file)["providers"]
    assert provider["type"] == "file"
    dashboard_target = mount_of(stack, "grafana", DASHBOARD)
    assert str(PurePosixPath(dashboard_target).parent) == provider["options"]["path"]
    home = env_of(stack["services"]["grafana"]).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home in (None, dashboard_target)
