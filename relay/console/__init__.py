"""The relay's web console under /console: dashboard, setup wizard, integrate page.

Served by the relay itself (Quart-Trio templates and static files from this
package; no CDN, no build step), behind a login that exchanges the admin
token for a signed session cookie. See docs/console.md.

    sessions.py   session cookies, CSRF tokens, the login rate limit
    series.py     the 15-minute per-model history the charts draw
    state.py      the dashboard's state document (one per SSE tick)
    blueprint.py  the routes: pages, the SSE stream, the JSON actions
"""

from __future__ import annotations

__all__: list[str] = []
