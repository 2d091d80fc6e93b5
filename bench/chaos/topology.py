"""Who is in the cluster and which network paths carry traffic (pure; no I/O).

Seven hosts: one storage host (SeaweedFS), three workers, two routers and one client host (the
workload). A host's name is also its process's identity: workers run with ``WORKER_ID`` = their
host name, routers with ``ROUTER_ID``, so faults, samples and logs all say ``w1``, never an
address.
"""

from __future__ import annotations

from itertools import combinations

STORAGE = "storage"
CLIENT = "client"
WORKERS = ("w0", "w1", "w2")
ROUTERS = ("r0", "r1")
HOSTS = (STORAGE, *WORKERS, *ROUTERS, CLIENT)
# Processes the faults may kill or freeze (storage has its own fault: a restart).
PROCESSES = (*WORKERS, *ROUTERS)


def traffic_paths(*, worker_to_worker: bool = True) -> tuple[tuple[str, str], ...]:
    """Host pairs with traffic between them, each once (a partition cuts one of these).

    Routers reach every worker, workers reach storage and (to ask about a session's owner) each
    other, the client host reaches both routers. Pairs with no traffic (client and storage, a
    router and storage) are left out: cutting them would test nothing.
    """
    paths = [(router, worker) for router in ROUTERS for worker in WORKERS]
    paths += [(worker, STORAGE) for worker in WORKERS]
    if worker_to_worker:
        paths += list(combinations(WORKERS, 2))
    paths += [(CLIENT, router) for router in ROUTERS]
    return tuple(paths)


def path_name(a: str, b: str, *, oneway: bool) -> str:
    """``"r0<->w1"`` for a partition of both directions, ``"r0->w1"`` for packets from r0 only."""
    return f"{a}->{b}" if oneway else f"{a}<->{b}"
