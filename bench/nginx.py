"""nginx as a reference WebSocket proxy: a generated config, run in the foreground.

    python -m bench.nginx --port 8090 --dir /tmp/x --upstreams 127.0.0.1:8081,127.0.0.1:8082

writes `DIR/nginx.conf` and execs `nginx -p DIR -c nginx.conf -e DIR/error.log
-g 'daemon off;'`, so the process the benchmark started *is* nginx's master (its workers are its
children: bench/procstat.py sums the tree) and SIGTERM stops it. Everything nginx writes (pid,
error log, temp directories) stays inside DIR. Loopback addresses only.

- `worker_processes 1`: our router is one event loop on one core, so is nginx here: the
  comparison is per event loop, not per machine. The benchmark VM has two cores shared by the
  two workers, the load generators and the proxy; a second nginx worker could only steal CPU
  from them, and at these loads one nginx worker is far from busy.
- `user`: nginx started as root switches its workers to `nobody`, who may not enter the temp
  directory (mode 0700, owned by root). As root the config says `user root;` (fine for a
  throwaway loopback benchmark); as anyone else the directive is left out (nginx ignores it with
  a warning when it is not root).
- Upstream: `hash $request_uri consistent` (ketama) over the same two workers as the router. It
  places rooms differently from the router's rendezvous hashing; both workers are identical, so
  only the split of rooms over them differs (the benchmark reports it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from contract.env import parse_address


def config(port: int, upstreams: list[tuple[str, int]], directory: Path, as_root: bool) -> str:
    """The whole nginx.conf: one worker, WebSocket proxying, paths inside `directory`."""
    for host, _ in [("127.0.0.1", port), *upstreams]:
        if not host.startswith("127."):
            raise ValueError(f"loopback addresses only, got {host}")
    d = directory
    servers = "\n".join(f"        server {host}:{p};" for host, p in upstreams)
    user = "user root;\n" if as_root else ""
    return f"""{user}worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream workers {{
        hash $request_uri consistent;
{servers}
    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"""


def command(directory: Path, binary: str = "nginx") -> list[str]:
    return [
        binary,
        "-p", str(directory),
        "-c", "nginx.conf",
        "-e", str(directory / "error.log"),
        "-g", "daemon off;",
    ]  # fmt: skip


def version(binary: str = "nginx") -> str:
    """`nginx -v` (it prints to stderr), or '-' when nginx is missing."""
    path = shutil.which(binary)
    if path is None:
        return "-"
    done = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True, help="prefix: config, pid, logs, temp")
    p.add_argument("--upstreams", required=True, help="host:port,host:port")
    a = p.parse_args(argv)
    upstreams = [parse_address(x, "--upstreams") for x in a.upstreams.split(",") if x.strip()]
    binary = shutil.which("nginx")
    if binary is None:
        raise SystemExit("nginx is not installed: apt-get install -y nginx (benchmark only)")
    a.dir.mkdir(parents=True, exist_ok=True)
    (a.dir / "nginx.conf").write_text(config(a.port, upstreams, a.dir, os.geteuid() == 0))
    os.execv(binary, command(a.dir, binary))


if __name__ == "__main__":
    main()
