"""One plain line for a daemon that cannot start (port taken, permission, files).

Start-up failures surface from `trio.run` as exception groups, whose default
text is "Exceptions from Trio nursery (1 sub-exception)": useless to an
operator. These helpers find what actually failed and say it in one line.
"""

from __future__ import annotations

import errno

__all__ = ["describe_os_error", "leaf_errors"]

_HINTS = {
    errno.EADDRINUSE: "another program is using that address",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "no interface on this machine has that address",
}


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """Every non-group exception inside `exc` (itself if it is not a group), in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaf_errors(sub)]
    return [exc]


def describe_os_error(exc: OSError, *, listen: str | None = None) -> str:
    """A one-line reason for an `OSError` met while starting.

    Args:
        exc: The error.
        listen: The address the daemon was binding, for errors without a file
            name (socket errors).

    Returns:
        e.g. ``cannot listen on 127.0.0.1:8080: another program is using that
        address (...)`` or ``permission denied: /var/lib/modelrelay``.
    """
    reason = _HINTS.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        return f"{reason}: {exc.filename}"
    if listen is not None:
        return f"cannot listen on {listen}: {reason}"
    return reason
