"""``agent llamafile``: from nothing to a relayed model in one command.

Modules, each owning one thing:

- `catalog`: the model catalog (shipped TOML, fetched, user), attrs + cattrs;
- `hardware`: RAM/VRAM detection (or given facts);
- `fit`: the 1.2x fit rule and `recommend`;
- `download`: resumable, verified, atomic downloads;
- `runner`: starting/stopping a model server process, health checks, ports;
- `state`: one state file per running model, stale-file cleanup;
- `serve`: model server + the agent (agent/daemon.py's run_agent) in one tree;
- `doctor`: the checks behind ``doctor``;
- `settings`: ``config set/get/unset/list``;
- `paths`: the platform data directory;
- `cli`: the Typer sub-app registered as ``agent llamafile``.
"""

__all__: list[str] = []
