"""Whether an update may be applied: its own size (``MAX_UPDATE_BYTES``) and the size its
session's documents would reach (``MAX_DOC_BYTES``). The answer is data (``Refusal``); the
session raises it, each endpoint turns it into its protocol's refusal (close 4413, a JSON
``error``, an HTTP 413).

A session's size is the bytes of its documents' state (``Doc.get_update()``, one per document,
summed). Encoding every document on every keystroke would cost more than the edit, so a session
keeps a running estimate (``DocSize``): the last exact figure plus the bytes of every update
applied since. An update grows the state by about its own size and a deletion shrinks it, so
the estimate follows the truth closely and runs above it once there were deletions. Only when
it would pass the limit is the state measured exactly, and the update is refused only if the
exact size plus the update passes it.

A session loaded already over the limit (the limit was lowered, or written before it existed)
loads and serves as before. What adds nothing to it is accepted: an update that only deletes,
or carries only items the documents already hold. What adds items is refused until deletions
have brought it back under.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from contract.env import MIB

Limit = Literal["update", "document"]


@dataclass(frozen=True)
class Limits:
    max_update_bytes: int = 4 * MIB
    max_doc_bytes: int = 32 * MIB


@dataclass(frozen=True)
class Refusal:
    """Why an update was refused: which limit (the metric's label), its setting and value,
    and the figure that passed it (the update's bytes, or the size the documents would reach)."""

    limit: Limit
    setting: str
    maximum: int
    value: int

    @property
    def reason(self) -> str:
        """One line for a close frame (it fits the 123 bytes) or a JSON ``reason``."""
        if self.limit == "update":
            return f"update of {self.value} bytes exceeds {self.setting} ({self.maximum})"
        return f"document would reach {self.value} bytes, over {self.setting} ({self.maximum})"


class LimitExceeded(ValueError):
    """An update was refused by a limit; nothing of it was applied, relayed or stored."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class DocSize:
    """A session's documents' size: the last exact measure plus the bytes applied since."""

    __slots__ = ("exact", "since")

    def __init__(self, exact: int) -> None:
        self.exact = exact
        self.since = 0

    @property
    def estimate(self) -> int:
        """Never below the true size (see the module's docstring)."""
        return self.exact + self.since

    def grew(self, nbytes: int) -> None:
        self.since += nbytes

    def measured(self, exact: int) -> None:
        self.exact = exact
        self.since = 0


def decide(
    limits: Limits,
    size: DocSize,
    nbytes: int,
    *,
    measure: Callable[[], int],
    adds: Callable[[], bool],
    growth: int | None = None,
) -> Refusal | None:
    """None when an update of ``nbytes`` may be applied, else why not.

    ``growth``: how much it may add to the documents, when that is known to differ from
    ``nbytes`` (a file operation that replaces a text grows it by the difference). ``measure``
    encodes the documents (the exact size: costly, called only when the estimate
    would pass the limit and something was applied since the last measure); ``adds`` says
    whether the update brings items the documents do not hold yet (cheaper, called first).
    """
    if nbytes > limits.max_update_bytes:
        return Refusal("update", "MAX_UPDATE_BYTES", limits.max_update_bytes, nbytes)
    grows = nbytes if growth is None else growth
    if size.estimate + grows <= limits.max_doc_bytes or not adds():
        return None
    if size.since:
        size.measured(measure())
    reach = size.exact + grows
    if reach <= limits.max_doc_bytes:
        return None
    return Refusal("document", "MAX_DOC_BYTES", limits.max_doc_bytes, reach)
