"""ModelRelay Desktop: the agent in the system tray (the optional ``[desktop]`` extra).

The GUI wraps the same agent (agent/daemon.py's `run_agent`) on a worker
thread. Modules without Qt: `state` (agent events → tray state), `settings`
(TOML file, preferences, keyring), `autostart`, `updates`, `detect`,
`runner` (the agent thread and its bridge), `diagnostics`, `command` (the
CLI entry). With Qt (PySide6): `forms` and `app`. See docs/desktop.md.
"""
