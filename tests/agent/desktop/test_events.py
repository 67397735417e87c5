"""How a session's end is classified for a person (agent/events.py)."""

import ssl

from agent.errors import AuthRefused, RelayClosed, RelayUnreachable, VersionRejected
from agent.events import FailureKind, failure_kind


def test_failure_kinds() -> None:
    assert failure_kind(None, registered=True) is FailureKind.DRAINED
    assert failure_kind(AuthRefused("401", 401), registered=False) is FailureKind.AUTH
    assert failure_kind(VersionRejected(1002, "v9"), registered=False) is FailureKind.VERSION
    assert failure_kind(RelayUnreachable("refused"), registered=False) is FailureKind.UNREACHABLE
    assert failure_kind(RelayClosed(1006, ""), registered=True) is FailureKind.DROPPED
    assert failure_kind(RelayClosed(1006, ""), registered=False) is FailureKind.UNREACHABLE
    try:
        try:
            raise ssl.SSLError(1, "wrong version number")
        except ssl.SSLError as inner:
            raise OSError("handshake") from inner
    except OSError as middle:
        tls = RelayUnreachable("cannot connect")
        tls.__cause__ = middle
    assert failure_kind(tls, registered=False) is FailureKind.TLS
