"""A probe run inside a host's namespace: ``python -m tests.chaos.probe serve|tcp|udp ...``.

- ``serve ADDR``: TCP echo on 7000, a UDP sink on 7001, and on 7002 the sink's counts by
  source address as JSON (then reset), for the test in the root namespace to read.
- ``tcp ADDR [--count N] [--timeout S]``: N round trips to ADDR's echo; prints the median
  round trip in ms, or ``timeout``.
- ``udp ADDR N``: sends N datagrams to ADDR's sink.

Standard library only, so a probe starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

ECHO, SINK, COUNTS = 7000, 7001, 7002


def serve(address: str) -> None:
    received: Counter[str] = Counter()
    lock = threading.Lock()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept(port: int, handle: Callable[[socket.socket], None]) -> None:
        server = socket.create_server((address, port))
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def counts(conn: socket.socket) -> None:
        with conn, lock:
            conn.sendall(json.dumps(dict(received)).encode())
            received.clear()

    def sink() -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((address, SINK))
        while True:
            _, (source, _) = udp.recvfrom(2048)
            with lock:
                received[source] += 1

    threading.Thread(target=accept, args=(ECHO, echo), daemon=True).start()
    threading.Thread(target=accept, args=(COUNTS, counts), daemon=True).start()
    threading.Thread(target=sink, daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def tcp(address: str, count: int, timeout: float) -> str:
    try:
        with socket.create_connection((address, ECHO), timeout=timeout) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = []
            for _ in range(count):
                began = time.monotonic()
                conn.sendall(b"ping")
                got = b""
                while len(got) < 4:
                    chunk = conn.recv(4 - len(got))
                    if not chunk:
                        return "closed"
                    got += chunk
                times.append((time.monotonic() - began) * 1000)
            return f"{statistics.median(times):.2f}"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error {exc.errno}"


def udp(address: str, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(b"x" * 64, (address, SINK))
            time.sleep(0.001)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve").add_argument("address")
    t = sub.add_parser("tcp")
    t.add_argument("address")
    t.add_argument("--count", type=int, default=5)
    t.add_argument("--timeout", type=float, default=1.0)
    u = sub.add_parser("udp")
    u.add_argument("address")
    u.add_argument("count", type=int)
    args = p.parse_args()
    if args.command == "serve":
        serve(args.address)
    elif args.command == "tcp":
        print(tcp(args.address, args.count, args.timeout))
    else:
        udp(args.address, args.count)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
