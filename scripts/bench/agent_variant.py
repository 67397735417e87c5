#!/usr/bin/env python3
"""Run `agent` with one proposed change patched in, to measure it before it is made.

    python agent_variant.py VARIANT run --proxy-url ... (the agent's own arguments)

VARIANT:

- ``h11``: `Backend.post` goes through `proposal_h11_backend.H11Pool` (P1);
- ``keepalive32``: httpx as today, its keep-alive pool capped at 32 (P1-lite).

`run.py` uses it when ``BENCH_AGENT_VARIANT`` is set; the agent's code is not
touched.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


def _patch_keepalive32() -> None:
    real = httpx.Limits

    def capped(
        *,
        max_connections: int | None = None,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float | None = 5.0,
    ) -> httpx.Limits:
        keep = min(32, max_keepalive_connections if max_keepalive_connections is not None else 32)
        return real(
            max_connections=max_connections,
            max_keepalive_connections=keep,
            keepalive_expiry=keepalive_expiry,
        )

    httpx.Limits = capped  # type: ignore[misc]


def _patch_h11() -> None:
    import agent.backend as backend_module

    from proposal_h11_backend import H11Pool, H11Response

    pools: dict[str, H11Pool] = {}
    http_post = backend_module.Backend.post

    @asynccontextmanager
    async def post(
        self: backend_module.Backend, path: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[H11Response]:
        if not self.base_url.startswith("http://"):
            async with http_post(self, path, body, headers) as response:
                yield response  # type: ignore[misc]
            return
        pool = pools.get(self.base_url)
        if pool is None:
            pool = pools[self.base_url] = H11Pool(self.base_url, connect_timeout=10.0, max_idle=256)
        sent = dict(headers)
        if self.api_key:
            sent["authorization"] = f"Bearer {self.api_key}"
        async with pool.post(path, body, sent, self.url(path)) as response:
            yield response

    backend_module.Backend.post = post  # type: ignore[method-assign,assignment]


def main() -> None:
    variant, *rest = sys.argv[1:]
    if variant == "h11":
        _patch_h11()
    elif variant == "keepalive32":
        _patch_keepalive32()
    elif variant != "none":
        raise SystemExit(f"unknown agent variant {variant!r}")
    from agent.cli import main as agent_main

    sys.argv = ["agent", *rest]
    agent_main()


if __name__ == "__main__":
    main()
