"""``python -m agent``: the ``agent`` command line."""

from agent.cli import main

main()
