"""The ``agent`` command line: flags / environment / TOML file → AgentConfig → trio.run.

Precedence is flag > environment variable > ``--config`` file > default. The
file is read by an eager ``--config`` option whose callback fills click's
``default_map`` before any other option is resolved; its keys are the option
names with dashes or underscores (``max-concurrency = 4``), at the top level
or in an ``[agent]`` table.

Every usage or configuration error prints one line naming the flag and exits
with 2; no traceback. Exit codes: 0 clean shutdown (after a drain, and also
after a second signal), 2 bad usage or configuration, 1 anything else.
``modelrelay-worker`` is ``agent run`` under its upstream name.
"""

import logging
import sys
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn

import trio
import typer

# Typer's shell-completion machinery (what its own --show-completion uses).
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script

from agent.config import DEFAULT_BACKEND_URL, DEFAULT_PROXY_URL, AgentConfig
from agent.desktop.command import desktop_command
from agent.errors import ConfigError
from agent.llamafile.cli import app as llamafile_app
from agent.logging import configure_logging

__all__ = ["app", "main", "run_main", "worker_app"]

log = logging.getLogger(__name__)

_SHELLS = ("bash", "zsh", "fish", "powershell")

app = typer.Typer(
    name="agent",
    help="ModelRelay agent: connects this box's LLM server to a relay (outbound only).",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# `modelrelay-worker`: the same `run` command as a program of its own.
worker_app = typer.Typer(
    name="modelrelay-worker",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version() -> str:
    try:
        return metadata.version("modelrelay")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _version_callback(ctx: typer.Context, _param: typer.CallbackParam, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        typer.echo(f"{ctx.find_root().info_name} {_version()}")
        raise typer.Exit()


def _completions_callback(
    ctx: typer.Context, _param: typer.CallbackParam, value: str | None
) -> None:
    if value is None or ctx.resilient_parsing:
        return
    shell = value.strip().lower()
    if shell not in _SHELLS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(_SHELLS)}")
    prog = ctx.find_root().info_name or "agent"
    complete_var = "_{}_COMPLETE".format(prog.replace("-", "_").upper())
    typer.echo(get_completion_script(prog_name=prog, complete_var=complete_var, shell=shell))
    raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        callback=_version_callback,
        is_eager=True,
        expose_value=False,
        help="Print the version and exit.",
    ),
]
CompletionsOption = Annotated[
    str | None,
    typer.Option(
        "--completions",
        metavar="SHELL",
        callback=_completions_callback,
        is_eager=True,
        expose_value=False,
        help="Print the completion script for bash, zsh, fish or powershell, and exit.",
    ),
]


@app.callback()
def _root(version: VersionOption = False, completions: CompletionsOption = None) -> None:
    """ModelRelay agent: connects this box's LLM server to a relay (outbound only)."""


def _load_config_file(
    ctx: typer.Context, _param: typer.CallbackParam, value: Path | None
) -> Path | None:
    """Eager callback: load the TOML file into ``ctx.default_map`` (below env and flags)."""
    if value is None or ctx.resilient_parsing:
        return value
    try:
        data = tomllib.loads(value.read_text(encoding="utf-8"))
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {str(value)!r}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{str(value)!r} is not valid TOML: {exc}") from None
    section = data.get("agent")
    entries = {k: v for k, v in data.items() if k != "agent" or not isinstance(v, dict)}
    if isinstance(section, dict):
        entries.update(section)
    known = {p.name for p in ctx.command.params if p.name and p.expose_value}
    known.discard("config")
    defaults: dict[str, Any] = {}
    for key, item in entries.items():
        name = key.replace("-", "_")
        if name not in known:
            raise typer.BadParameter(f"unknown key {key!r} in {str(value)!r}")
        if isinstance(item, list):
            item = ",".join(str(part) for part in item)
        elif isinstance(item, dict):
            raise typer.BadParameter(f"key {key!r} in {str(value)!r} must not be a table")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def run_command(
    proxy_url: Annotated[
        str, typer.Option(envvar="PROXY_URL", help="The relay (http/https; ws/wss derived).")
    ] = DEFAULT_PROXY_URL,
    worker_secret: Annotated[
        str | None,
        typer.Option(
            envvar="WORKER_SECRET", help="Secret for the relay (required).", show_default=False
        ),
    ] = None,
    backend_url: Annotated[
        str, typer.Option(envvar="BACKEND_URL", help="Local OpenAI-compatible backend.")
    ] = DEFAULT_BACKEND_URL,
    backend_api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BACKEND_API_KEY",
            help="Credential the agent adds for its backend.",
            show_default=False,
        ),
    ] = None,
    models: Annotated[
        str, typer.Option(envvar="MODELS", help="Comma list; '*' = discover from the backend.")
    ] = "*",
    models_poll_interval: Annotated[
        float,
        typer.Option(envvar="MODELS_POLL_SECS", help="Seconds between discovery checks."),
    ] = 30.0,
    provider: Annotated[
        str, typer.Option(envvar="PROVIDER_NAME", help="Provider to register under.")
    ] = "local",
    worker_name: Annotated[
        str | None,
        typer.Option(
            envvar="WORKER_NAME", help="Name shown on the dashboard [default: host name]."
        ),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(envvar="MAX_CONCURRENCY", help="Requests at once.")
    ] = 1,
    backend_dialect: Annotated[
        str,
        typer.Option(
            envvar="BACKEND_DIALECT",
            help="anthropic: the backend serves /v1/messages; openai: translate; auto: probe.",
        ),
    ] = "auto",
    drain_timeout: Annotated[
        float,
        typer.Option(envvar="DRAIN_TIMEOUT_SECS", help="Seconds SIGTERM waits for in-flight work."),
    ] = 30.0,
    log_level: Annotated[
        str,
        typer.Option(
            envvar=["LOG_LEVEL", "RUST_LOG"], help="e.g. debug, or agent=debug,httpx=warning."
        ),
    ] = "info",
    log_format: Annotated[str, typer.Option(envvar="LOG_FORMAT", help="text or json.")] = "text",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            is_eager=True,
            callback=_load_config_file,
            help="TOML file with option values (flags and environment override it).",
        ),
    ] = None,
    version: VersionOption = False,
    completions: CompletionsOption = None,
) -> None:
    """Connect to the relay and serve requests until SIGTERM/SIGINT."""
    try:
        agent_config = AgentConfig.create(
            proxy_url=proxy_url,
            worker_secret=worker_secret,
            backend_url=backend_url,
            backend_api_key=backend_api_key,
            models=models,
            models_poll_interval=models_poll_interval,
            provider=provider,
            worker_name=worker_name,
            max_concurrency=max_concurrency,
            backend_dialect=backend_dialect,
            drain_timeout=drain_timeout,
            log_level=log_level,
            log_format=log_format,
        )
    except ConfigError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{exc.option}'") from None
    _serve(agent_config)


def _serve(config: AgentConfig) -> None:
    """Configure logging and run the agent until it stops (tests replace this)."""
    # Imported here so that --version, --help and usage errors skip loading
    # the networking stack.
    from agent.daemon import run_agent

    configure_logging(config.log_level, config.log_format)
    trio.run(run_agent, config)


app.command("run")(run_command)
worker_app.command()(run_command)
app.add_typer(llamafile_app, name="llamafile")  # agent/llamafile/: pick, download, serve
# The tray app (the [desktop] extra): its module imports no Qt until it runs.
app.command("desktop")(desktop_command)


def _run(typer_app: typer.Typer, argv: Sequence[str] | None, prog_name: str) -> NoReturn:
    command = typer.main.get_command(typer_app)
    completion_init()  # registers Typer's shell classes: answers the scripts' requests
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name=prog_name,
            standalone_mode=False,
        )
    except typer.TyperException as exc:  # click's ClickException family, usage errors included
        message = " ".join(exc.format_message().split())
        print(f"{prog_name}: error: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except KeyboardInterrupt:
        # Only before signal handling is installed: during start-up.
        sys.exit(130)
    except Exception:
        log.critical("the agent crashed", exc_info=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``agent`` console script."""
    _run(app, argv, "agent")


def run_main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``modelrelay-worker``: ``agent run`` under its upstream name."""
    _run(worker_app, argv, "modelrelay-worker")
