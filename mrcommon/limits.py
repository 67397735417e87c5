"""The process's open-file limit, raised once at start-up by both daemons.

Every stream holds a descriptor in each daemon (a client socket in the relay,
a backend connection in the agent), and the usual soft limit of 1,024 is far
below what 2,000 concurrent streams need. `resource` exists only on Unix, so
it is imported when the function runs: on Windows the module still imports
and the function says there is no limit to raise.
"""

from __future__ import annotations

__all__ = ["UNLIMITED_TARGET", "raise_open_file_limit"]

UNLIMITED_TARGET = 1 << 20
"""Where the soft limit goes when the hard one is unlimited: Linux's default
``fs.nr_open``, the most a process may ask for (``RLIM_INFINITY`` itself is refused)."""


def raise_open_file_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (never lowering either).

    A refusal from the kernel is not an error: the daemon runs with the limit
    it has, and the caller logs the figure this returns.

    Returns:
        The soft limit now in force, or None where there is no such limit
        (no `resource` module, as on Windows, or an unlimited soft limit).
    """
    try:
        import resource  # Unix only: imported here so Windows can import us
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    target = max(soft, UNLIMITED_TARGET) if hard == resource.RLIM_INFINITY else hard
    if soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. a lower fs.nr_open under an unlimited hard limit
        return soft
    return target
