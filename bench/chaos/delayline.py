"""A delay line in user space, for kernels without ``sch_netem`` (this project's VM has none).

While a host is delayed, its veth's root end leaves the bridge; a fresh veth pair takes its
place (one end on the bridge), and this process relays raw frames between the two: frames the
host sends are held for the delay (± jitter, never reordered), frames to it pass at once. So
the delay is on the host's egress, as ``tc netem`` on its ``eth0`` would put it, and open TCP
connections keep going (a frame in the line when it is removed is lost; TCP resends it).

``PACKET_VNET_HDR`` makes the kernel hand over and take back GSO frames (a veth carries TCP
segments of up to 64 KiB, more than a packet socket may send as one plain frame), so nothing
needs segmenting here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import deque

from .hosts import Namespaces, command

_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_VNET_HDR = 15
_PACKET_OUTGOING = 4
_MAX_FRAME = 65536 + 64
_BATCH = 256


class DelayLine:
    def __init__(
        self, namespaces: Namespaces, host: str, delay_s: float, jitter_s: float, seed: int
    ) -> None:
        self.namespaces = namespaces
        self.host = host
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self._rng = random.Random(seed)
        self._sockets: list[socket.socket] = []
        # Frames from the host, in order, each with the loop time it is due; one timer.
        self._line: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._out: socket.socket | None = None
        self.frames = 0

    async def start(self) -> None:
        ns = self.namespaces
        host_end, line_end, bridge_end = (
            ns.veth(self.host),
            ns.spare_link(self.host, "d"),
            ns.spare_link(self.host, "e"),
        )
        await asyncio.to_thread(
            command,
            ["ip", "-batch", "-"],
            stdin=(
                f"link add {line_end} type veth peer name {bridge_end}\n"
                f"link set {bridge_end} master {ns.bridge} up\n"
                f"link set {line_end} up promisc on\n"
            ),
        )
        loop = asyncio.get_running_loop()
        from_host, to_bridge = _packet_socket(host_end), _packet_socket(line_end)
        self._sockets, self._out = [from_host, to_bridge], to_bridge
        loop.add_reader(from_host, self._relay, from_host, to_bridge, True)
        loop.add_reader(to_bridge, self._relay, to_bridge, from_host, False)
        # Only now take the host off the bridge: from here on its frames go through the line.
        await asyncio.to_thread(
            command, ["ip", "link", "set", host_end, "nomaster", "promisc", "on"]
        )

    async def stop(self) -> None:
        ns = self.namespaces
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._line.clear()
        await asyncio.to_thread(
            command,
            ["ip", "link", "set", ns.veth(self.host), "master", ns.bridge, "promisc", "off"],
            check=False,
        )
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        await asyncio.to_thread(
            command, ["ip", "link", "del", ns.spare_link(self.host, "d")], check=False
        )

    def _relay(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(_BATCH):
            try:
                frame, address = src.recvfrom(_MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                loop.remove_reader(src)  # the link went away under us (stop() is coming)
                return
            if address[2] == _PACKET_OUTGOING:
                continue  # our own send, seen on the way out
            self.frames += 1
            if not delayed:
                _send(dst, frame)
                continue
            jitter = self._rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
            due = loop.time() + max(0.0, self.delay_s + jitter)
            if self._line:
                due = max(due, self._line[-1][0])  # never overtakes an earlier frame
            self._line.append((due, frame))
            if self._timer is None:
                self._timer = loop.call_at(due, self._deliver)

    def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._line and self._line[0][0] <= now:
            _, frame = self._line.popleft()
            if self._out is not None:
                _send(self._out, frame)
        self._timer = loop.call_at(self._line[0][0], self._deliver) if self._line else None


def _packet_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    try:
        sock.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
        sock.bind((interface, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _send(sock: socket.socket, frame: bytes) -> None:
    with contextlib.suppress(OSError):  # a full queue or a link going away drops the frame
        sock.send(frame)
