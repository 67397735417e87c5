"""``agent desktop`` and ``modelrelay-desktop``: the tray app's command line.

Importing this module loads no Qt: PySide6 is imported only when the
command runs, and its absence is one clear line (exit 2) naming the extra
to install, not a traceback.
"""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer

__all__ = ["desktop_command", "main"]


def desktop_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help=(
                "Start straight into the tray with this `agent run --config` file "
                "(secret from WORKER_SECRET, else the keyring)."
            ),
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(envvar=["LOG_LEVEL", "RUST_LOG"], help="Level of the stderr log.")
    ] = "info",
    log_format: Annotated[str, typer.Option(envvar="LOG_FORMAT", help="text or json.")] = "text",
) -> None:
    """Run the agent in the system tray (first run: a setup wizard)."""
    from agent.desktop.runner import SignalInbox
    from agent.logging import configure_logging

    # Before Qt loads (seconds on a busy machine): SIGTERM from here on quits cleanly.
    inbox = SignalInbox()
    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        import keyring  # noqa: F401
        import platformdirs  # noqa: F401
        import PySide6.QtWidgets  # noqa: F401  # only to fail early with a clear message
    except ImportError as exc:
        print(
            f"agent desktop: error: the desktop app needs the [desktop] extra ({exc.name} is "
            "missing): pip install 'modelrelay-server[desktop]'",
            file=sys.stderr,
        )
        raise typer.Exit(2) from None
    from agent.desktop.app import run_desktop

    raise typer.Exit(run_desktop(config, inbox))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``modelrelay-desktop``."""
    from agent.cli import _run

    app = typer.Typer(
        name="modelrelay-desktop",
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )
    app.command()(desktop_command)
    _run(app, argv, "modelrelay-desktop")
