"""`python -m relay` runs the relay's command line."""

from relay.cli import main

main()
