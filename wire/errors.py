"""Errors raised by the wire codec.

The tree::

    WireError                 root of everything `wire` raises on purpose
    └── ProtocolError         a frame breaks the protocol (close the socket with 1002)
        └── VersionMismatch   the peer announced a protocol version we do not speak

A `ProtocolError` message names the problem precisely (the frame type, the
field, what was expected and what arrived), short enough to serve as a
WebSocket close reason once the caller trims it to 123 bytes.
"""

__all__ = ["ProtocolError", "VersionMismatch", "WireError"]


class WireError(Exception):
    """Root of the `wire` package's exceptions."""


class ProtocolError(WireError):
    """A frame is not valid under the protocol: bad JSON, unknown type, bad field."""


class VersionMismatch(ProtocolError):
    """The peer speaks a protocol version other than ours.

    Attributes:
        theirs: The version the peer announced, verbatim.
        ours: The version this implementation speaks.
    """

    theirs: str
    ours: str

    def __init__(self, theirs: str, ours: str) -> None:
        # Both go to `args` so that the exception pickles and copies intact.
        super().__init__(theirs, ours)
        self.theirs = theirs
        self.ours = ours

    def __str__(self) -> str:
        shown = self.theirs if len(self.theirs) <= 40 else self.theirs[:37] + "..."
        return f"protocol version mismatch: peer speaks {shown!r}, we speak {self.ours!r}"
