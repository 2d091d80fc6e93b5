"""What a router and a worker tell each other while a client connection is being routed.

The router's hash only proposes a worker; the session's owner record decides (worker
``ownership``). So a worker may be asked for a session another live worker owns. A router says
it is one with ``X-Collab-Router`` (its id) and, on the JSON protocol, names the session with
``X-Collab-Session`` (it read the join; the worker sees it only after accepting). A worker that
does not own the session then answers the upgrade with **421 Misdirected Request** and the owner
in ``X-Collab-Owner*`` headers instead of accepting, and the router connects the client to that
owner instead, once. A client that reached the worker directly gets close 1013 naming the owner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .env import parse_address

ROUTER_HEADER = "x-collab-router"
SESSION_HEADER = "x-collab-session"
OWNER_HEADER = "x-collab-owner"
OWNER_ADDRESS_HEADER = "x-collab-owner-address"
OWNER_EPOCH_HEADER = "x-collab-owner-epoch"
MISDIRECTED = 421


@dataclass(frozen=True)
class OwnerHint:
    """Where a session is live: the owner's worker id, address (host:port) and epoch."""

    worker: str
    address: str
    epoch: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (OWNER_HEADER.encode(), self.worker.encode()),
            (OWNER_ADDRESS_HEADER.encode(), self.address.encode()),
            (OWNER_EPOCH_HEADER.encode(), str(self.epoch).encode()),
        ]

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_address(self.address, OWNER_ADDRESS_HEADER)

    @classmethod
    def from_headers(cls, header: Callable[[str], str | None]) -> OwnerHint | None:
        """The hint in a 421 answer (``header`` looks up a header by lower-case name), or None
        when it is missing or malformed (the router then refuses the client, never guesses)."""
        worker, address, epoch = (
            header(OWNER_HEADER),
            header(OWNER_ADDRESS_HEADER),
            header(OWNER_EPOCH_HEADER),
        )
        if not worker or not address or not epoch or not epoch.isdigit():
            return None
        hint = cls(worker, address, int(epoch))
        try:
            hint.host_port  # noqa: B018 - validates the address
        except ValueError:
            return None
        return hint
