"""Hosts as network namespaces on one bridge, with real addresses on a private subnet.

Every host is a namespace ``chaos-{run}-{host}`` holding one end of a veth pair (``eth0``); the
other end (``ch{run}{host}``) is a port of the bridge ``chaos-{run}``, which also carries an
address of the root namespace (``.1``), so the orchestrator reaches every host directly. The
subnet is ``10.77.N.0/24``, N the first one no interface and no other live run uses::

    root ns 10.77.N.1 ─┬─ storage .2   w0 .11  w1 .12  w2 .13   r0 .21  r1 .22   client .31
              bridge ──┴─ (one veth per host)

``run`` is 6 random hex digits, so two runs never collide. A run registers itself under
``/run/collab-chaos/{run}.json`` (its pid and the pid's start time) before building anything;
``Namespaces.create`` first removes every ``chaos-*`` namespace and link whose run is not alive
any more (a crashed or SIGKILLed earlier run), processes inside them included.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REGISTRY = Path("/run/collab-chaos")
SUBNET = "10.77"
_NUMBERS = {"storage": 2, "w0": 11, "w1": 12, "w2": 13, "r0": 21, "r1": 22, "client": 31}
_SHORT = {"storage": "st", "client": "cl"}
_RUN_IN_NAME = re.compile(r"^chaos-([0-9a-f]{6})(?:-|$)")
_RUN_IN_LINK = re.compile(r"^(?:chaos-([0-9a-f]{6})|c[hde]([0-9a-f]{6})(?:st|cl|w\d|r\d))$")
_COMMAND_TIMEOUT = 15.0


class HostError(RuntimeError):
    """A command that builds or changes the namespaces failed (its stderr is in the message)."""


def namespaces_unavailable() -> str | None:
    """Why namespaces cannot be used on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or use --loopback)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 nftables, or --loopback)"
    return None


def command(
    argv: Sequence[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run one short command (ip, nft, tc), bounded; raise HostError with its stderr."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{' '.join(argv)}: no answer in {_COMMAND_TIMEOUT:.0f}s") from exc
    if check and done.returncode != 0:
        raise HostError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


@dataclass(frozen=True)
class Namespaces:
    run: str
    subnet: int
    hosts: tuple[str, ...]

    @property
    def bridge(self) -> str:
        return f"chaos-{self.run}"

    @property
    def root_address(self) -> str:
        return f"{SUBNET}.{self.subnet}.1"

    def netns(self, host: str) -> str:
        return f"chaos-{self.run}-{host}"

    def veth(self, host: str) -> str:
        """The root namespace's end of the host's veth (a bridge port)."""
        return f"ch{self.run}{_SHORT.get(host, host)}"

    def spare_link(self, host: str, end: str) -> str:
        """Extra links made for this host (the delay line's veth pair: ``end`` "d" or "e")."""
        return f"c{end}{self.run}{_SHORT.get(host, host)}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.subnet}.{_NUMBERS[host]}"

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns(host)]

    @classmethod
    def create(cls, hosts: Sequence[str]) -> Namespaces:
        """Sweep dead runs, pick a subnet, register, then build; undone if any step fails."""
        REGISTRY.mkdir(parents=True, exist_ok=True)
        with _registry_lock():
            sweep_stale()
            subnet = _free_subnet()
            run = secrets.token_hex(3)
            while (REGISTRY / f"{run}.json").exists():
                run = secrets.token_hex(3)
            record = {"pid": os.getpid(), "started": _start_time(os.getpid()), "subnet": subnet}
            (REGISTRY / f"{run}.json").write_text(json.dumps(record))
            namespaces = cls(run=run, subnet=subnet, hosts=tuple(hosts))
            try:
                namespaces._build()
            except BaseException:
                namespaces.destroy()
                raise
        return namespaces

    def _build(self) -> None:
        root = [
            f"link add {self.bridge} type bridge",
            f"link set {self.bridge} up",
            f"addr add {self.root_address}/24 dev {self.bridge}",
        ]
        for host in self.hosts:
            root += [
                f"netns add {self.netns(host)}",
                f"link add {self.veth(host)} type veth peer name eth0 netns {self.netns(host)}",
                f"link set {self.veth(host)} master {self.bridge} up",
            ]
        command(["ip", "-batch", "-"], stdin="\n".join(root) + "\n")
        for host in self.hosts:
            inside = [
                "link set lo up",
                f"addr add {self.address(host)}/24 dev eth0",
                "link set eth0 up",
            ]
            command(["ip", "-n", self.netns(host), "-batch", "-"], stdin="\n".join(inside) + "\n")

    def destroy(self) -> None:
        """Kill every process in the namespaces, delete them, the bridge and the record."""
        destroy_run(self.run)


def destroy_run(run: str) -> None:
    names = [name for name in _netns_names() if name.startswith(f"chaos-{run}-")]
    pids = [pid for name in names for pid in _pids_in(name)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name in names:
        command(["ip", "netns", "del", name], check=False)
    for link in _link_names():
        if _link_run(link) == run:
            command(["ip", "link", "del", link], check=False)
    (REGISTRY / f"{run}.json").unlink(missing_ok=True)


def sweep_stale() -> list[str]:
    """Destroy every run of ours whose process is gone; returns their ids."""
    runs = {m.group(1) for name in _netns_names() if (m := _RUN_IN_NAME.match(name))}
    runs |= {run for link in _link_names() if (run := _link_run(link)) is not None}
    if REGISTRY.exists():
        runs |= {path.stem for path in REGISTRY.glob("*.json")}
    stale = sorted(run for run in runs if not _run_alive(run))
    for run in stale:
        destroy_run(run)
    return stale


def leftovers(run: str) -> list[str]:
    """Whatever of ``run`` still exists (namespaces, links, its record): empty once destroyed."""
    found = [name for name in _netns_names() if name.startswith(f"chaos-{run}-")]
    found += [link for link in _link_names() if _link_run(link) == run]
    if (REGISTRY / f"{run}.json").exists():
        found.append(str(REGISTRY / f"{run}.json"))
    return found


def _run_alive(run: str) -> bool:
    try:
        record = json.loads((REGISTRY / f"{run}.json").read_text())
    except (OSError, ValueError):
        return False
    pid = int(record.get("pid", 0))
    return pid > 0 and _start_time(pid) == record.get("started")


def _free_subnet() -> int:
    addresses = command(["ip", "-4", "-o", "addr", "show"]).stdout
    used = {int(n) for n in re.findall(rf"\b{re.escape(SUBNET)}\.(\d+)\.\d+/", addresses)}
    for path in REGISTRY.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            used.add(int(json.loads(path.read_text())["subnet"]))
    for subnet in range(1, 255):
        if subnet not in used:
            return subnet
    raise HostError(f"no free subnet left in {SUBNET}.0.0/16")


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    with open(REGISTRY / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _netns_names() -> list[str]:
    out = command(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_names() -> list[str]:
    out = command(["ip", "-o", "link", "show"], check=False).stdout
    return [m.group(1) for m in re.finditer(r"^\d+: ([^:@\s]+)", out, re.MULTILINE)]


def _link_run(link: str) -> str | None:
    match = _RUN_IN_LINK.match(link)
    return None if match is None else match.group(1) or match.group(2)


def _pids_in(netns: str) -> list[int]:
    out = command(["ip", "netns", "pids", netns], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/pid/stat field 22): with the
    pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
