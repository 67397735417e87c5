"""TLS to the relay: the system's CAs, plus a private CA given with `--ca-file`.

A relay behind a TLS proxy with a certificate from a company or home CA is
verified against that CA's file; public certificates keep working, because
the system's store is loaded too. Verification is never turned off.
"""

from __future__ import annotations

import ssl

from agent.errors import ConfigError

__all__ = ["check_ca_file", "relay_tls_context"]


def relay_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The client context for `wss://` to the relay.

    Args:
        ca_file: A PEM file of extra CA certificates to trust, or None.
    """
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def check_ca_file(ca_file: str) -> str:
    """Refuse at start-up a CA file that cannot be used, naming the flag.

    Returns:
        The path, unchanged.

    Raises:
        ConfigError: missing, unreadable, or no certificate in it.
    """
    try:
        relay_tls_context(ca_file)
    except FileNotFoundError:
        raise ConfigError("--ca-file", f"{ca_file!r} does not exist") from None
    except PermissionError:
        raise ConfigError("--ca-file", f"{ca_file!r} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError("--ca-file", f"{ca_file!r} is a directory, not a PEM file") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            "--ca-file", f"{ca_file!r} holds no usable PEM certificate ({exc.strerror or exc})"
        ) from None
    return ca_file
