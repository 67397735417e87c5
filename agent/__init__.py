"""ModelRelay agent: dials out to a relay and runs its requests against a local LLM server.

Start it with `agent.daemon.run_agent` (in-process) or the ``agent run``
command line (agent/cli.py).
"""

__all__: list[str] = []
