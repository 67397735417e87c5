"""Code both daemons need at run time, written once.

`wire/` is the protocol without I/O; this package is the small part of the I/O
layer that the relay and the agent share: WebSocket close codes, direct socket
reads and writes, the open-file limit, and log-setup helpers. It imports only
the standard library and trio, never `relay` or `agent`.
"""
