"""The relay's HTTP front: what listens, and how each connection is served.

Parts, one concern each:

- `listener`: accepts connections, runs each one's request loop, reaps idle ones.
- `http1`: one HTTP/1.1 request's ASGI ``receive``/``send`` on the socket.
- `websocket`: the worker socket (RFC 6455 on the socket, framed by `relay.wsframes`).
- `hangup`: one epoll set noticing every waiting client that leaves.
- `lifespan`: the app's ASGI lifespan.
- `hypercorn`: what the builtin front hands to Hypercorn.

`serve` is the builtin front.
"""

from relay.front.listener import serve

__all__ = ["serve"]
