"""Network faults, two ways: nftables and a delay line between namespaces, or loopback links.

Both answer the same four requests (cut a path, one way or both; delay a host's sends; lose a
share of them; heal everything), so faults and the schedule do not know which one runs.

Namespaces (``NamespaceNetwork``):

- a cut is one nftables table per fault (``netdev chaos_{fault}``) in each affected namespace,
  dropping, never rejecting (a REJECT answers "connection refused", which reads as *gone*: the
  owner's sessions would be taken over at once instead of after its lease). a→b is dropped at
  b's ``eth0`` ingress and, where the kernel has the egress hook (5.16+), at a's ``eth0``
  egress too. Both are at the device, below the IP stack, as a switch would drop: a drop in the
  ``output`` hook would instead fail the sender's own ``sendto`` with EPERM, a local error no
  real partition causes;
- loss is a table ``netdev chaos_loss`` in the host: ``numgen random`` drops that share of what
  leaves its ``eth0`` (of what arrives there, on a kernel without the egress hook);
- delay is ``tc netem`` on the host's ``eth0`` where the kernel has it, else the user-space
  delay line (delayline.py): either way the host's sends wait.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from .delayline import DelayLine
from .hosts import HostError, Namespaces, command
from .links import Direction, Link, Shape
from .topology import HOSTS, traffic_paths


class Network(Protocol):
    def paths(self) -> tuple[tuple[str, str], ...]: ...

    async def cut(self, fault: str, a: str, b: str, *, oneway: bool) -> dict[str, Any]: ...

    async def uncut(self, fault: str) -> None: ...

    async def delay(self, host: str, delay_s: float, jitter_s: float) -> dict[str, Any]: ...

    async def undelay(self, host: str) -> None: ...

    async def lose(self, host: str, share: float) -> dict[str, Any]: ...

    async def unlose(self, host: str) -> None: ...

    async def heal_all(self) -> None: ...


async def _run(argv: Sequence[str], stdin: str | None = None, *, check: bool = True) -> str:
    done = await asyncio.to_thread(command, argv, stdin=stdin, check=check)
    return done.stdout


class NamespaceNetwork:
    def __init__(self, namespaces: Namespaces, seed: int) -> None:
        self.ns = namespaces
        self._seed = seed
        self._cuts: dict[str, tuple[str, ...]] = {}
        self._lines: dict[str, DelayLine] = {}
        self._netem: bool | None = None
        self._egress: bool | None = None
        self._lock = asyncio.Lock()

    def paths(self) -> tuple[tuple[str, str], ...]:
        return traffic_paths()

    def _nft(self, host: str) -> list[str]:
        return [*self.ns.exec_prefix(host), "nft"]

    async def cut(self, fault: str, a: str, b: str, *, oneway: bool) -> dict[str, Any]:
        flows = [(a, b)] if oneway else [(a, b), (b, a)]
        egress = await self._has_egress()
        for host in (a, b):
            rules = []
            for src, dst in flows:
                if host == dst:
                    rules.append(("ingress", f"ip saddr {self.ns.address(src)} drop"))
                if host == src and egress:
                    rules.append(("egress", f"ip daddr {self.ns.address(dst)} drop"))
            await _run([*self._nft(host), "-f", "-"], _table(f"chaos_{fault}", rules))
        self._cuts[fault] = (a, b)
        return {
            "rules": "nftables netdev drop" + (" (ingress and egress)" if egress else ""),
            "flows": [f"{s}->{d}" for s, d in flows],
        }

    async def uncut(self, fault: str) -> None:
        for host in self._cuts.pop(fault, ()):
            await _run(
                [*self._nft(host), "delete", "table", "netdev", f"chaos_{fault}"], check=False
            )

    async def delay(self, host: str, delay_s: float, jitter_s: float) -> dict[str, Any]:
        async with self._lock:
            if await self._has_netem():
                await _run(
                    [
                        *self.ns.exec_prefix(host),
                        *("tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay"),
                        f"{delay_s * 1000:.0f}ms",
                        f"{jitter_s * 1000:.0f}ms",
                    ]
                )
                return {"via": "netem"}
            line = DelayLine(self.ns, host, delay_s, jitter_s, self._seed)
            await line.start()
            self._lines[host] = line
            return {"via": "delay line (no sch_netem in this kernel)"}

    async def undelay(self, host: str) -> None:
        async with self._lock:
            line = self._lines.pop(host, None)
            if line is not None:
                await line.stop()
            elif self._netem:
                await _run(
                    [*self.ns.exec_prefix(host), "tc", "qdisc", "del", "dev", "eth0", "root"],
                    check=False,
                )

    async def lose(self, host: str, share: float) -> dict[str, Any]:
        hook = "egress" if await self._has_egress() else "ingress"
        rule = f"numgen random mod 10000 < {round(share * 10000)} drop"
        await _run([*self._nft(host), "-f", "-"], _table("chaos_loss", [(hook, rule)]))
        return {
            "rules": f"nftables netdev numgen drop ({'sent' if hook == 'egress' else 'received'})"
        }

    async def unlose(self, host: str) -> None:
        await _run([*self._nft(host), "delete", "table", "netdev", "chaos_loss"], check=False)

    async def heal_all(self) -> None:
        for host in list(self._lines):
            await self.undelay(host)
        self._cuts.clear()
        for host in self.ns.hosts:
            listing = await _run([*self._nft(host), "list", "tables"], check=False)
            for family, table in re.findall(r"^table (\w+) (chaos_\w+)$", listing, re.MULTILINE):
                await _run([*self._nft(host), "delete", "table", family, table], check=False)
            if self._netem:
                await _run(
                    [*self.ns.exec_prefix(host), "tc", "qdisc", "del", "dev", "eth0", "root"],
                    check=False,
                )

    async def _has_egress(self) -> bool:
        """Whether nftables has the netdev egress hook here (Linux 5.16+), asked once."""
        if self._egress is None:
            nft = self._nft(self.ns.hosts[-1])
            try:
                await _run([*nft, "-f", "-"], _table("chaos_probe", [("egress", "counter")]))
                self._egress = True
            except HostError:
                self._egress = False
            await _run([*nft, "delete", "table", "netdev", "chaos_probe"], check=False)
        return self._egress

    async def _has_netem(self) -> bool:
        """Whether this kernel has ``sch_netem`` (asked once, on the client host's loopback)."""
        if self._netem is None:
            prefix = [*self.ns.exec_prefix(self.ns.hosts[-1]), "tc", "qdisc"]
            try:
                await _run([*prefix, "add", "dev", "lo", "root", "netem", "delay", "1ms"])
                await _run([*prefix, "del", "dev", "lo", "root"], check=False)
                self._netem = True
            except HostError:
                self._netem = False
        return self._netem


def _table(name: str, rules: list[tuple[str, str]]) -> str:
    """An nftables script that replaces table ``netdev name``, its chains hooked to ``eth0``
    (add + delete first makes it idempotent)."""
    chains = []
    for hook in ("ingress", "egress"):
        mine = [rule for chain, rule in rules if chain == hook]
        if mine:
            body = "\n".join(f"    {rule}" for rule in mine)
            chains.append(
                f"  chain {hook} {{\n"
                f'    type filter hook {hook} device "eth0" priority -10; policy accept;\n'
                f"{body}\n  }}"
            )
    return (
        f"add table netdev {name}\ndelete table netdev {name}\n"
        f"table netdev {name} {{\n" + "\n".join(chains) + "\n}\n"
    )


class LoopbackNetwork:
    """Every path is a ``Link`` (links.py); a host's "netem" state shapes what it sends."""

    def __init__(self, links: Mapping[tuple[str, str], Link]) -> None:
        self.links = dict(links)
        self.shapes: dict[str, Shape] = {host: Shape() for host in HOSTS}
        self._cuts: dict[str, list[tuple[Link, Direction]]] = {}

    def shape_of(self, host: str) -> Shape:
        return self.shapes[host]

    def paths(self) -> tuple[tuple[str, str], ...]:
        # Workers reach each other at the address they advertise, directly: not a link here.
        return traffic_paths(worker_to_worker=False)

    async def start(self) -> None:
        for link in self.links.values():
            await link.start()

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()

    async def cut(self, fault: str, a: str, b: str, *, oneway: bool) -> dict[str, Any]:
        held: list[tuple[Link, Direction]] = []
        for link in self.links.values():
            if {link.src, link.dst} != {a, b}:
                continue
            a_to_b: Direction = "forward" if link.src == a else "back"
            directions: list[Direction] = [a_to_b] if oneway else ["forward", "back"]
            for direction in directions:
                await link.hold(direction, fault)
                held.append((link, direction))
        if not held:
            raise HostError(f"no loopback link between {a} and {b}")
        self._cuts[fault] = held
        return {"via": "loopback proxy (bytes held; new connections refused)"}

    async def uncut(self, fault: str) -> None:
        for link, direction in self._cuts.pop(fault, []):
            await link.release(direction, fault)

    async def delay(self, host: str, delay_s: float, jitter_s: float) -> dict[str, Any]:
        self.shapes[host] = replace(self.shapes[host], delay_s=delay_s, jitter_s=jitter_s)
        return {"via": "loopback proxies (the host's sends, on its links)"}

    async def undelay(self, host: str) -> None:
        self.shapes[host] = replace(self.shapes[host], delay_s=0.0, jitter_s=0.0)

    async def lose(self, host: str, share: float) -> dict[str, Any]:
        self.shapes[host] = replace(self.shapes[host], loss=share)
        return {"via": "loopback proxies (a lost segment as a retransmission stall)"}

    async def unlose(self, host: str) -> None:
        self.shapes[host] = replace(self.shapes[host], loss=0.0)

    async def heal_all(self) -> None:
        self._cuts.clear()
        for host in self.shapes:
            self.shapes[host] = Shape()
        for link in self.links.values():
            await link.release_all()
