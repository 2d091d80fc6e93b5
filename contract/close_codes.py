"""Every WebSocket close code this system sends, in one table, and the one way to fit a reason.

Standard codes come from ``websockets.frames.CloseCode`` (RFC 6455 §7.4); those of our own
are in the 4000-4999 range that RFC 6455 leaves to applications, chosen to read like their HTTP
counterparts. Clients rely on them: y-websocket 3 reconnects on any close but a 44xx one
(4401/4403/4409/4413 stop it, as they stop the web workspace), JSON clients reconnect on 1012 and
1013.
"""

from __future__ import annotations

from websockets.frames import CloseCode

NORMAL = CloseCode.NORMAL_CLOSURE  # 1000
PROTOCOL_ERROR = CloseCode.PROTOCOL_ERROR  # 1002: a frame RFC 6455 forbids (unmasked, RSV bits)
UNSUPPORTED_DATA = CloseCode.UNSUPPORTED_DATA  # 1003: a text frame on the binary Yjs protocol
ABNORMAL = CloseCode.ABNORMAL_CLOSURE  # 1006: never on the wire; the peer vanished
INVALID_DATA = CloseCode.INVALID_DATA  # 1007: a corrupt Yjs message
POLICY = CloseCode.POLICY_VIOLATION  # 1008: unknown path, slow client, no join in time
TOO_BIG = CloseCode.MESSAGE_TOO_BIG  # 1009: over MAX_MESSAGE_BYTES
INTERNAL_ERROR = CloseCode.INTERNAL_ERROR  # 1011: a bug of ours, or no answer to a keep-alive ping
RESTART = CloseCode.SERVICE_RESTART  # 1012: reconnect now; the session moved (drain, hand-off)
TRY_AGAIN = CloseCode.TRY_AGAIN_LATER  # 1013: reconnect later (storage down, no worker ready)
UNAUTHENTICATED = 4401  # no token, or a bad one
FORBIDDEN = 4403  # a good token that does not allow this user or session
# Another live connection writes this document with the same Yjs client ID: the client must
# start with a fresh document (a new Y.Doc gets a new ID) before it writes again.
CLIENT_ID_CONFLICT = 4409
# An update over MAX_UPDATE_BYTES, or one that would grow the session's documents past
# MAX_DOC_BYTES (``worker.limits``): it was not applied; the reason names the limit and its value.
# A 44xx code, so that y-websocket does not reconnect only to send the same update again.
TOO_LARGE = 4413

MAX_REASON_BYTES = 123  # a control frame carries 125 bytes: the 2-byte code and the reason


def fit_reason(reason: str, limit: int = MAX_REASON_BYTES) -> str:
    """``reason`` cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    data = reason.encode()
    if len(data) <= limit:
        return reason
    return data[:limit].decode(errors="ignore")
