"""Flow control for a byte relay between two asyncio protocols (the router's client/worker relay,
the public port's HTTP relay of both programs): when one side's socket cannot take more, the
other side is not read until it can, so a slow reader never makes the relay buffer without
bound."""

from __future__ import annotations

import asyncio


class RelayFlow:
    """Mixin for one side of a relay; the side has ``transport`` and ``partner`` (the other
    side, whose reads feed this side's writes)."""

    __slots__ = ()

    transport: asyncio.Transport | None
    partner: RelayFlow | None

    def pause_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.resume_reading()
