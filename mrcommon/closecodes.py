"""WebSocket close codes (RFC 6455 §7.4.1) as the worker socket uses them.

One table for both daemons: the relay closes with them, the agent reads them
to tell a refused secret or version from a lost connection.
"""

from __future__ import annotations

__all__ = [
    "ABNORMAL",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "INVALID_DATA",
    "MESSAGE_TOO_BIG",
    "NORMAL",
    "NO_STATUS",
    "POLICY_VIOLATION",
    "PROTOCOL_ERROR",
    "SENDABLE",
]

NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
# Never sent on the wire: 1005 means "the close frame had no code", 1006 "no
# close frame at all" (the connection dropped).
NO_STATUS = 1005
ABNORMAL = 1006
INVALID_DATA = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

# The codes an endpoint may put in a close frame (RFC 6455 §7.4.1 and IANA's registry).
SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
