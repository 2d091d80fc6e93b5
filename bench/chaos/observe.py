"""Who serves what: the workers' own session lists, sampled from the root namespace.

Every ~250 ms each worker is asked ``GET /admin/sessions`` (its admin token), each on its own
loop, so a frozen or cut-off worker delays only its own samples. One line per answer (or
failure) in ``RUN_DIR/owners.jsonl``::

    {"t": 1764950000.812, "sent": 1764950000.805, "worker": "w1", "ok": true, "live": ["s-3"]}

``live`` lists the sessions whose state is ``live`` (serving edits; not ``fenced`` nor
``leaving``). The answer describes the worker at some instant between ``sent`` and ``t``; the
checker compares workers' samples with that uncertainty in mind (its ``owner_bound_s``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

INTERVAL_S = 0.25
TIMEOUT_S = 1.0


async def sample_owners(
    worker_urls: Mapping[str, str], token: str, path: Path, stop: asyncio.Event
) -> int:
    """Until ``stop`` is set; returns the number of samples written."""
    written = 0
    # One local file, opened once, a line written per sample: not worth a thread.
    with open(path, "a", buffering=1) as out:  # noqa: ASYNC230

        async def one(worker: str, url: str, http: httpx.AsyncClient) -> None:
            nonlocal written
            headers = {"authorization": f"Bearer {token}"}
            while not stop.is_set():
                sent = time.time()
                live: list[str] = []
                try:
                    answer = await http.get(f"{url}/admin/sessions", headers=headers)
                    ok = answer.status_code == 200
                    if ok:
                        live = [
                            s["sessionId"]
                            for s in answer.json().get("sessions", [])
                            if s.get("state") == "live"
                        ]
                except (httpx.HTTPError, ValueError):
                    ok = False
                sample = {"t": time.time(), "sent": sent, "worker": worker, "ok": ok, "live": live}
                out.write(json.dumps(sample) + "\n")
                written += 1
                wait = sent + INTERVAL_S - time.time()
                if wait > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                    except TimeoutError:
                        pass

        limits = httpx.Limits(max_keepalive_connections=len(worker_urls))
        async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as http:
            await asyncio.gather(*(one(w, url, http) for w, url in worker_urls.items()))
    return written
