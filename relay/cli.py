"""`relay serve` (also installed as `modelrelay-server`): flags/env/file -> RelayConfig.

Precedence is flag > environment variable > `--config` TOML file > default:
click consults the command line, then `envvar`, then `ctx.default_map`
(which the eager `--config` option fills from the file), then the default.
"""

from __future__ import annotations

import enum
import json
import re
import sys
from functools import partial
from pathlib import Path  # noqa: TC003 - Typer reads the annotations at run time
from typing import Annotated

import trio
import typer

# Typer's shell-completion machinery (what its own --show-completion uses).
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script

from mrcommon.clihelp import PanelCommand
from mrcommon.configfile import META_KEY, ConfigFileError, from_file_message, read_settings
from mrcommon.startup import describe_os_error, leaf_errors
from relay import __version__
from relay.config import RelayConfig, default_data_dir, parse_listen
from relay.logging import configure_logging
from relay.trusted import TrustedProxies

__all__ = ["app", "main", "parse_size", "serve_main"]

_SIZE = re.compile(r"\s*(\d+)\s*([kmgt]?i?b?)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str) -> int:
    """`33554432`, `32MiB`, `32M` (MiB), `1GiB`, `500kb` -> bytes."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"expected a size like 1048576, 32MiB or 1GiB, got {text!r}")
    number, unit = int(match[1]), (match[2] or "").lower()
    if unit.endswith("ib") or (len(unit) == 1 and unit != "b"):
        return int(number * 1024 ** "bkmgt".index(unit[0]))
    return number * _UNITS[unit.rstrip("b") or ""]


def _load_config_file(ctx: typer.Context, _param: typer.CallbackParam, value: Path | None) -> None:
    """Eager: the file's settings become click's default_map (below env and flags).

    Unknown keys are refused (a typo must not start the relay on defaults).
    """
    if value is None or ctx.resilient_parsing:
        return
    known = {p.name for p in ctx.command.params if p.name and p.expose_value} - {"config"}
    try:
        values, keys = read_settings(value, "relay", known)
    except ConfigFileError as exc:
        raise typer.BadParameter(str(exc)) from None
    ctx.meta[META_KEY] = (value, keys)
    ctx.default_map = {**(ctx.default_map or {}), **values}


def _bad(ctx: typer.Context, name: str, message: str) -> typer.BadParameter:
    """A usage error for option `name`, naming the file key when the value came from there."""
    param = next((p for p in ctx.command.params if p.name == name), None)
    flag = "--" + name.replace("_", "-")
    # Typer's annotations name its own Parameter subclass; these are those objects.
    return typer.BadParameter(message, ctx=ctx, param=param, param_hint=f"'{flag}'")  # type: ignore[arg-type]


def _size_option(value: str | int) -> int:
    try:
        return value if isinstance(value, int) else parse_size(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _seconds(value: float) -> float:
    if value < 0:
        raise typer.BadParameter("must be 0 (none) or a positive number of seconds")
    return value


def _print_completions(ctx: typer.Context, shell: Shell | None) -> None:
    if shell is None:
        return
    prog = ctx.find_root().info_name or "relay"
    var = "_" + re.sub(r"\W", "_", prog).upper() + "_COMPLETE"
    typer.echo(get_completion_script(prog_name=prog, complete_var=var, shell=shell.value))
    raise typer.Exit()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"relay (ModelRelay) {__version__}")
        raise typer.Exit()


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


class HttpFront(enum.Enum):
    BUILTIN = "builtin"
    HYPERCORN = "hypercorn"


class Shell(enum.Enum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"
    POWERSHELL = "powershell"
    PWSH = "pwsh"


def serve(
    ctx: typer.Context,
    worker_secret: Annotated[
        str,
        typer.Option(
            envvar="WORKER_SECRET",
            help="Secret agents present.",
            show_default=False,
            metavar="SECRET",
            rich_help_panel="Workers",
        ),
    ],
    listen: Annotated[
        str,
        typer.Option(
            envvar="LISTEN_ADDR",
            help="Address to listen on, HOST:PORT.",
            metavar="HOST:PORT",
            rich_help_panel="Listening",
        ),
    ] = "127.0.0.1:8080",
    provider: Annotated[
        str,
        typer.Option(
            envvar="PROVIDER_NAME",
            help="Provider agents register under.",
            metavar="NAME",
            rich_help_panel="Workers",
        ),
    ] = "local",
    max_queue_len: Annotated[
        int,
        typer.Option(
            envvar="MAX_QUEUE_LEN",
            min=0,
            help="Queued requests at most (0 = unlimited).",
            metavar="N",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 100,
    queue_timeout: Annotated[
        float,
        typer.Option(
            envvar="QUEUE_TIMEOUT_SECS",
            callback=_seconds,
            help="Seconds a request may wait queued (0 = none).",
            metavar="SECONDS",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 30,
    request_timeout: Annotated[
        float,
        typer.Option(
            envvar="REQUEST_TIMEOUT_SECS",
            callback=_seconds,
            help="Seconds a request may be in flight (0 = none).",
            metavar="SECONDS",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 300,
    log_level: Annotated[
        str,
        typer.Option(
            envvar=["LOG_LEVEL", "RUST_LOG"],
            help="Level, or a RUST_LOG-style spec: e.g. debug, or warn,relay=debug.",
            metavar="SPEC",
            rich_help_panel="Logging",
        ),
    ] = "info",
    log_format: Annotated[
        LogFormat, typer.Option(envvar="LOG_FORMAT", metavar="text|json", rich_help_panel="Logging")
    ] = LogFormat.TEXT,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="MODELRELAY_ADMIN_TOKEN",
            help="Bearer token for /admin/*.",
            metavar="TOKEN",
            rich_help_panel="Keys and admin",
        ),
    ] = None,
    require_api_keys: Annotated[
        bool,
        typer.Option(
            envvar="MODELRELAY_REQUIRE_API_KEYS",
            help="Inference needs a client API key.",
            rich_help_panel="Keys and admin",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="MODELRELAY_DATA_DIR",
            help="Where the key store lives.",
            metavar="DIR",
            rich_help_panel="Keys and admin",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="DATABASE_URL",
            help="PostgreSQL URL for the key store.",
            metavar="URL",
            rich_help_panel="Keys and admin",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            envvar="HEARTBEAT_INTERVAL_SECS",
            min=0.01,
            help="Ping period, seconds.",
            metavar="SECONDS",
            rich_help_panel="Workers",
        ),
    ] = 15,
    heartbeat_timeout: Annotated[
        float,
        typer.Option(
            envvar="HEARTBEAT_TIMEOUT_SECS",
            min=0.01,
            help="Silence before a worker is gone.",
            metavar="SECONDS",
            rich_help_panel="Workers",
        ),
    ] = 45,
    drain_timeout: Annotated[
        float,
        typer.Option(
            envvar="DRAIN_TIMEOUT_SECS",
            callback=_seconds,
            help="How long shutdown waits for in-flight work.",
            metavar="SECONDS",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 30,
    drain_grace: Annotated[
        float,
        typer.Option(
            envvar="DRAIN_GRACE_SECS",
            callback=_seconds,
            help="After SIGTERM, seconds /health answers 503 while new work is still "
            "served (for a balancer's health check), before the drain.",
            metavar="SECONDS",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 0,
    max_body_bytes: Annotated[
        str,
        typer.Option(
            envvar="MAX_BODY_BYTES",
            help="Largest client body accepted.",
            metavar="SIZE",
            rich_help_panel="Limits and timeouts",
        ),
    ] = "32MiB",
    stream_keepalive: Annotated[
        float,
        typer.Option(
            envvar="STREAM_KEEPALIVE_SECS",
            min=0,
            metavar="SECONDS",
            help="Keepalive period for a streamed request waiting for its first token (0 = off).",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 10,
    max_frame_bytes: Annotated[
        str,
        typer.Option(
            envvar="MAX_FRAME_BYTES",
            help="Largest WebSocket frame from an agent.",
            metavar="SIZE",
            rich_help_panel="Limits and timeouts",
        ),
    ] = "64MiB",
    max_response_bytes: Annotated[
        str,
        typer.Option(
            envvar="MAX_RESPONSE_BYTES",
            help="Largest response relayed for one request.",
            metavar="SIZE",
            rich_help_panel="Limits and timeouts",
        ),
    ] = "1GiB",
    body_timeout: Annotated[
        float,
        typer.Option(
            envvar="BODY_TIMEOUT_SECS",
            callback=_seconds,
            metavar="SECONDS",
            help="Seconds a request body may take to arrive after its head (0 = none).",
            rich_help_panel="Limits and timeouts",
        ),
    ] = 30,
    max_pending_body_bytes: Annotated[
        str,
        typer.Option(
            envvar="MAX_PENDING_BODY_BYTES",
            metavar="SIZE",
            help="Request bodies held at once across requests not yet dispatched.",
            rich_help_panel="Limits and timeouts",
        ),
    ] = "256MiB",
    console: Annotated[
        bool,
        typer.Option(
            "--console/--no-console",
            envvar="MODELRELAY_CONSOLE",
            help="The web console under /console; you log in with the admin token.",
            rich_help_panel="Keys and admin",
        ),
    ] = True,
    http_front: Annotated[
        HttpFront,
        typer.Option(
            envvar="HTTP_FRONT",
            help="builtin (h11 on the socket, Hypercorn only for HTTP/2 and other upgrades) "
            "or hypercorn (every connection on Hypercorn + Quart-Trio).",
            metavar="builtin|hypercorn",
            rich_help_panel="Listening",
        ),
    ] = HttpFront.BUILTIN,
    trusted_proxies: Annotated[
        str | None,
        typer.Option(
            envvar="TRUSTED_PROXIES",
            help="Comma list of proxy addresses/CIDRs whose X-Forwarded-For/-Proto to believe.",
            show_default=False,
            metavar="CIDR,...",
            rich_help_panel="Listening",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            callback=_load_config_file,
            is_eager=True,
            exists=True,
            dir_okay=False,
            help="TOML file of settings (flag > env > file > default).",
            metavar="FILE",
            rich_help_panel="Configuration",
        ),
    ] = None,
) -> None:
    """Serve the relay: clients on /v1/*, agents on /v1/worker/connect."""
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise _bad(ctx, "listen", str(exc)) from None
    if not worker_secret:
        raise _bad(ctx, "worker_secret", "must not be empty")
    if database_url and not database_url.startswith(("postgresql://", "postgres://")):
        raise _bad(ctx, "database_url", "expected a PostgreSQL URL like postgresql://user@host/db")
    try:
        proxies = TrustedProxies.parse(trusted_proxies)
    except ValueError as exc:
        raise _bad(ctx, "trusted_proxies", str(exc)) from None
    sizes = {}
    for name, value in (
        ("max-body-bytes", max_body_bytes),
        ("max-frame-bytes", max_frame_bytes),
        ("max-response-bytes", max_response_bytes),
        ("max-pending-body-bytes", max_pending_body_bytes),
    ):
        try:
            sizes[name] = _size_option(value)
        except typer.BadParameter as exc:
            raise _bad(ctx, name.replace("-", "_"), exc.message) from None
    try:
        configure_logging(log_level, log_format.value)
    except ValueError as exc:
        raise _bad(ctx, "log_level", str(exc)) from None
    cfg = RelayConfig(
        worker_secret=worker_secret,
        listen_host=host,
        listen_port=port,
        provider=provider,
        max_queue_len=max_queue_len,
        queue_timeout=queue_timeout,
        request_timeout=request_timeout,
        log_level=log_level,
        log_format=log_format.value,
        admin_token=admin_token or None,
        require_api_keys=require_api_keys,
        data_dir=data_dir or default_data_dir(),
        database_url=database_url or None,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        drain_timeout=drain_timeout,
        drain_grace=drain_grace,
        max_body_bytes=sizes["max-body-bytes"],
        stream_keepalive=stream_keepalive,
        max_frame_bytes=sizes["max-frame-bytes"],
        max_response_bytes=sizes["max-response-bytes"],
        body_timeout=body_timeout,
        max_pending_body_bytes=sizes["max-pending-body-bytes"],
        console=console,
        http_front=http_front.value,
        trusted_proxies=proxies,
    )
    from relay.keys import KeyStoreError
    from relay.server import run_relay

    try:
        code = trio.run(run_relay, cfg, strict_exception_groups=True)
    except* OSError as group:  # the port is taken, a permission, a file
        # One line for the operator, not "Exceptions from Trio nursery".
        first = next(e for e in leaf_errors(group) if isinstance(e, OSError))
        typer.echo(f"relay: error: {describe_os_error(first, listen=cfg.listen)}", err=True)
        raise typer.Exit(1) from None
    except* KeyStoreError as group:  # the key database cannot be opened
        typer.echo(f"relay: error: {leaf_errors(group)[0]}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def loadtest(
    url: Annotated[
        str,
        typer.Option(
            help="The relay's base URL, http:// or https://.",
            metavar="URL",
            rich_help_panel="Target",
        ),
    ],
    model: Annotated[
        str, typer.Option(help="Model to ask for.", metavar="NAME", rich_help_panel="Target")
    ],
    requests: Annotated[
        int | None,
        typer.Option(
            "-n",
            "--requests",
            min=1,
            help="Requests in all [default: 100, or unlimited with --duration].",
            metavar="N",
            rich_help_panel="Requests",
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "-c",
            "--concurrency",
            min=1,
            max=10000,
            help="Requests at once.",
            metavar="N",
            rich_help_panel="Requests",
        ),
    ] = 8,
    stream: Annotated[
        bool, typer.Option("--stream", help="Stream the answers (SSE).", rich_help_panel="Requests")
    ] = False,
    duration: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Stop starting requests after this many seconds.",
            metavar="SECONDS",
            rich_help_panel="Requests",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="MODELRELAY_API_KEY",
            help="Client API key (mr-...).",
            show_default=False,
            metavar="KEY",
            rich_help_panel="Target",
        ),
    ] = None,
    prompt: Annotated[
        str, typer.Option(help="The user message sent.", metavar="TEXT", rich_help_panel="Requests")
    ] = ("Say hello in one short sentence."),
    max_tokens: Annotated[
        int,
        typer.Option(
            min=1, help="max_tokens of each request.", metavar="N", rich_help_panel="Requests"
        ),
    ] = 64,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds one request may take.",
            metavar="SECONDS",
            rich_help_panel="Requests",
        ),
    ] = 120,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="CA bundle for a private https relay.",
            metavar="FILE",
            rich_help_panel="Target",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Do not verify the relay's certificate.", rich_help_panel="Target"
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.", rich_help_panel="Output")
    ] = False,
) -> None:
    """Load-test a relay: latency and first-token percentiles, tokens/s, errors."""
    from relay.loadtest import LoadTest, progress_printer, render_text, run_loadtest

    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"expected http://... or https://..., got {url!r}", param_hint="'--url'"
        )
    config = LoadTest(
        url=url,
        model=model,
        requests=requests if requests is not None else (None if duration else 100),
        concurrency=concurrency,
        stream=stream,
        duration=duration,
        api_key=api_key,
        prompt=prompt,
        max_tokens=max_tokens,
        timeout=timeout,
        verify=False if insecure else (str(ca_file) if ca_file else True),
    )
    report = trio.run(partial(run_loadtest, config, on_progress=progress_printer()))
    summary = report.summary()
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
    elif summary["succeeded"]:
        typer.echo(render_text(summary))
    if not summary["succeeded"]:
        # Percentiles of failures would describe error paths, not the relay.
        errors = ", ".join(f"{k} {v}" for k, v in summary["errors"].items()) or "none sent"
        typer.echo(
            f"relay loadtest: error: every request failed ({errors}): no percentiles to report",
            err=True,
        )
        raise typer.Exit(1)


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
    completions: Annotated[
        Shell | None,
        typer.Option(
            "--completions",
            callback=_print_completions,
            is_eager=True,
            help="Print the shell completion script.",
            metavar="SHELL",
        ),
    ] = None,
) -> None:
    """ModelRelay relay: one endpoint in front of your GPU boxes."""


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
app.callback()(_root)
app.command("serve", cls=PanelCommand)(serve)
app.command("loadtest", cls=PanelCommand)(loadtest)

serve_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
serve_app.command(cls=PanelCommand)(serve)


def _run(typer_app: typer.Typer, prog: str) -> None:
    command = typer.main.get_command(typer_app)
    # Registers Typer's bash/zsh/fish/powershell classes, without which the
    # completion scripts' requests answer "Shell bash not supported".
    completion_init()
    try:
        code = command.main(prog_name=prog, standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = 1
    except typer.TyperException as exc:
        # One clear line naming the flag, never a traceback (cli.md).
        message = from_file_message(exc) or (
            exc.format_message() if hasattr(exc, "format_message") else str(exc)
        )
        typer.echo(f"{prog}: error: {message}", err=True)
        code = getattr(exc, "exit_code", 2)
    sys.exit(code or 0)


def main() -> None:
    _run(app, "relay")


def serve_main() -> None:
    """`modelrelay-server`: the same as `relay serve`."""
    _run(serve_app, "modelrelay-server")
