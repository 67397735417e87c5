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
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import attrs
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
from agent.metrics import parse_metrics_listen
from agent.tls import check_ca_file
from mrcommon.clihelp import PanelCommand
from mrcommon.configfile import META_KEY, ConfigFileError, from_file_message, read_settings
from mrcommon.meta import distribution_version
from mrcommon.startup import describe_os_error, leaf_errors

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
    return distribution_version()


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
    known = {p.name for p in ctx.command.params if p.name and p.expose_value} - {"config"}
    try:
        values, keys = read_settings(value, "agent", known)
    except ConfigFileError as exc:
        raise typer.BadParameter(str(exc)) from None
    ctx.meta[META_KEY] = (value, keys)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def run_command(
    ctx: typer.Context,
    proxy_url: Annotated[
        str,
        typer.Option(
            envvar="PROXY_URL",
            help="The relay (http/https; ws/wss derived).",
            metavar="URL",
            rich_help_panel="Relay connection",
        ),
    ] = DEFAULT_PROXY_URL,
    worker_secret: Annotated[
        str | None,
        typer.Option(
            envvar="WORKER_SECRET",
            help="Secret for the relay (required).",
            show_default=False,
            metavar="SECRET",
            rich_help_panel="Relay connection",
        ),
    ] = None,
    backend_url: Annotated[
        str,
        typer.Option(
            envvar="BACKEND_URL",
            help="Local OpenAI-compatible backend.",
            metavar="URL",
            rich_help_panel="Backend",
        ),
    ] = DEFAULT_BACKEND_URL,
    backend_api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BACKEND_API_KEY",
            help="Credential the agent adds for its backend.",
            show_default=False,
            metavar="KEY",
            rich_help_panel="Backend",
        ),
    ] = None,
    models: Annotated[
        str,
        typer.Option(
            envvar="MODELS",
            help="Comma list; '*' = discover from the backend.",
            metavar="LIST",
            rich_help_panel="Backend",
        ),
    ] = "*",
    models_poll_interval: Annotated[
        float,
        typer.Option(
            envvar="MODELS_POLL_SECS",
            help="Seconds between discovery checks.",
            metavar="SECONDS",
            rich_help_panel="Backend",
        ),
    ] = 30.0,
    provider: Annotated[
        str,
        typer.Option(
            envvar="PROVIDER_NAME",
            help="Provider to register under.",
            metavar="NAME",
            rich_help_panel="Relay connection",
        ),
    ] = "local",
    worker_name: Annotated[
        str | None,
        typer.Option(
            envvar="WORKER_NAME",
            help="Name the relay shows in /admin/workers [default: host name].",
            metavar="NAME",
            rich_help_panel="Relay connection",
        ),
    ] = None,
    max_concurrency: Annotated[
        int,
        typer.Option(
            envvar="MAX_CONCURRENCY",
            help="Requests at once.",
            metavar="N",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 1,
    backend_dialect: Annotated[
        str,
        typer.Option(
            envvar="BACKEND_DIALECT",
            help="anthropic: the backend serves /v1/messages; openai: translate; auto: probe.",
            metavar="auto|anthropic|openai",
            rich_help_panel="Backend",
        ),
    ] = "auto",
    drain_timeout: Annotated[
        float,
        typer.Option(
            envvar="DRAIN_TIMEOUT_SECS",
            help="Seconds SIGTERM waits for in-flight work.",
            metavar="SECONDS",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 30.0,
    log_level: Annotated[
        str,
        typer.Option(
            envvar=["LOG_LEVEL", "RUST_LOG"],
            help="e.g. debug, or agent=debug,httpx=warning.",
            metavar="SPEC",
            rich_help_panel="Logging",
        ),
    ] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            envvar="LOG_FORMAT",
            help="text or json.",
            metavar="text|json",
            rich_help_panel="Logging",
        ),
    ] = "text",
    ca_file: Annotated[
        str | None,
        typer.Option(
            envvar="MODELRELAY_CA_FILE",
            help="PEM file of extra CA certificates for an https relay (a private CA).",
            show_default=False,
            metavar="FILE",
            rich_help_panel="Relay connection",
        ),
    ] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            envvar="METRICS_LISTEN",
            help="Serve this agent's Prometheus /metrics on HOST:PORT (off when unset).",
            show_default=False,
            metavar="HOST:PORT",
            rich_help_panel="Metrics",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            is_eager=True,
            callback=_load_config_file,
            help="TOML file with option values (flags and environment override it).",
            rich_help_panel="Configuration",
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
        if ca_file:
            agent_config = attrs.evolve(agent_config, ca_file=check_ca_file(ca_file))
        if metrics_listen:
            try:
                parse_metrics_listen(metrics_listen)
            except ValueError as exc:
                raise ConfigError("--metrics-listen", str(exc)) from None
            agent_config = attrs.evolve(agent_config, metrics_listen=metrics_listen)
    except ConfigError as exc:
        name = exc.option.lstrip("-").replace("-", "_")
        param = next((p for p in ctx.command.params if p.name == name), None)
        raise typer.BadParameter(
            exc.message,
            ctx=ctx,
            param=param,  # type: ignore[arg-type]  # Typer's annotation names its subclass
            param_hint=f"'{exc.option}'",
        ) from None
    _serve(agent_config)


def _serve(config: AgentConfig) -> None:
    """Configure logging and run the agent until it stops (tests replace this)."""
    # Imported here so that --version, --help and usage errors skip loading
    # the networking stack.
    from agent.daemon import run_agent
    from agent.metrics import run_with_metrics

    configure_logging(config.log_level, config.log_format)
    try:
        trio.run(run_with_metrics, config, run_agent)
    except* OSError as group:  # e.g. the --metrics-listen port is taken
        first = next(e for e in leaf_errors(group) if isinstance(e, OSError))
        where = f"{config.metrics_listen} (--metrics-listen)"
        print(f"agent: error: {describe_os_error(first, listen=where)}", file=sys.stderr)
        sys.exit(1)


app.command("run", cls=PanelCommand)(run_command)
worker_app.command(cls=PanelCommand)(run_command)
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
        message = " ".join((from_file_message(exc) or exc.format_message()).split())
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
