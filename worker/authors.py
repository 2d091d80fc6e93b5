"""Which live connection writes as which Yjs client ID, per document.

Yjs names every item by (client ID, clock) and trusts each client ID to belong to one
document replica. Two replicas that share an ID (a forked process, a poorly seeded random
generator: docs/reliability.md) write different items under the same names; every peer keeps
the first it sees of each name and silently drops the other, so texts end up mixed, with no
error anywhere. A server cannot make clients pick good IDs, but it can refuse to let one ID
write through two live connections of one document:

- a connection *claims* an ID by sending an edit with items of that one client that the
  document does not have yet (``yjs_protocol.update_author``, and the items new here).
  Updates that bring nothing new neither claim nor conflict: pycrdt's provider sends every
  update of its document back, those it received from the server included, and a client that
  re-sends what the server has harms nobody. Catch-ups (a sync step 2, which may carry other
  clients' items) neither claim nor are checked, except against an ID in quarantine below;
- a second live connection that sends new items as a claimed ID is a *conflict*. The owner is
  probed first (a ping it must answer): a connection that does not answer is a dead one the
  client already replaced (it reconnected before the old connection was noticed gone), so
  the ID moves to the new one. An owner that answers keeps it, and the newcomer is refused
  (``worker.endpoints.conflicts``), its edit never applied;
- a refused ID stays in *quarantine* on the document while its owner is connected: a
  catch-up carrying its items from any other connection is refused too, so the refused
  replica cannot bring its items in by reconnecting.

Server-side edits (JSON file operations, the HTTP API) are the server's own and not tracked.
"""

from __future__ import annotations

from collections.abc import Callable

from .client import Client
from .yjs_protocol import carries


class Authors:
    __slots__ = ("_claims", "_owners", "_quarantine")

    def __init__(self) -> None:
        self._owners: dict[str, dict[int, Client]] = {}  # document -> client ID -> writer
        self._claims: dict[Client, set[tuple[str, int]]] = {}  # writer -> its (document, ID)
        self._quarantine: dict[str, dict[int, Client]] = {}  # document -> refused ID -> owner

    def claim(
        self, doc: str, client_id: int, conn: Client, brings_news: Callable[[], bool]
    ) -> Client | None:
        """``conn`` sends an edit as ``client_id``: if it brings items the document lacks
        (``brings_news``, asked only when ``conn`` is not the ID's writer already), ``conn``
        becomes the ID's writer, unless another live connection is: that one is returned,
        and nothing changes."""
        owners = self._owners.setdefault(doc, {})
        owner = owners.get(client_id)
        if owner is conn or not brings_news():
            return None
        if owner is not None and not owner.closing:
            return owner
        self._assign(doc, client_id, conn, owner)
        return None

    def replace(self, doc: str, client_id: int, conn: Client) -> None:
        """The ID's writer did not answer a probe: ``conn`` writes as it from now on."""
        owners = self._owners.setdefault(doc, {})
        self._assign(doc, client_id, conn, owners.get(client_id))

    def _assign(self, doc: str, client_id: int, conn: Client, previous: Client | None) -> None:
        self._owners[doc][client_id] = conn
        self._claims.setdefault(conn, set()).add((doc, client_id))
        if previous is not None and previous is not conn:
            claims = self._claims.get(previous)
            if claims is not None:
                claims.discard((doc, client_id))

    def quarantine(self, doc: str, client_id: int, owner: Client) -> None:
        self._quarantine.setdefault(doc, {})[client_id] = owner

    def blocked(self, doc: str, update: bytes, conn: Client) -> int | None:
        """A catch-up from ``conn`` that carries items of an ID in quarantine on ``doc``, whose
        owner is another live connection: that ID (else None). Costs nothing while no ID of
        the document is in quarantine."""
        quarantined = self._quarantine.get(doc)
        if not quarantined:
            return None
        for client_id, owner in quarantined.items():
            if owner is not conn and not owner.closing and carries(update, client_id):
                return client_id
        return None

    def release(self, conn: Client) -> None:
        """``conn`` left: the IDs it wrote as are free, and so are those it kept in
        quarantine."""
        for doc, client_id in self._claims.pop(conn, ()):
            owners = self._owners.get(doc)
            if owners is not None and owners.get(client_id) is conn:
                del owners[client_id]
                if not owners:
                    del self._owners[doc]
        for doc in list(self._quarantine):
            ids = self._quarantine[doc]
            for client_id in [i for i, owner in ids.items() if owner is conn]:
                del ids[client_id]
            if not ids:
                del self._quarantine[doc]
