"""`relay serve` (also installed as `modelrelay-server`): flags/env/file -> RelayConfig.

Precedence is flag > environment variable > `--config` TOML file > default:
click consults the command line, then `envvar`, then `ctx.default_map`
(which the eager `--config` option fills from the file), then the default.
"""

from __future__ import annotations

import enum
import re
import sys
import tomllib
from pathlib import Path  # noqa: TC003 - Typer reads the annotations at run time
from typing import Annotated

import trio
import typer
from typer._completion_shared import get_completion_script

from relay import __version__
from relay.config import RelayConfig, default_data_dir, parse_listen
from relay.logging import configure_logging

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
    if value is None:
        return
    try:
        doc = tomllib.loads(value.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {value}: {exc}") from None
    section = doc.get("relay", doc)
    if not isinstance(section, dict):
        raise typer.BadParameter(f"{value}: expected a table of settings")
    ctx.default_map = {str(k).replace("-", "_"): v for k, v in section.items()}


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
    worker_secret: Annotated[
        str, typer.Option(envvar="WORKER_SECRET", help="Secret agents present.", show_default=False)
    ],
    listen: Annotated[
        str, typer.Option(envvar="LISTEN_ADDR", help="Address to listen on, HOST:PORT.")
    ] = "127.0.0.1:8080",
    provider: Annotated[
        str, typer.Option(envvar="PROVIDER_NAME", help="Provider agents register under.")
    ] = "local",
    max_queue_len: Annotated[
        int,
        typer.Option(
            envvar="MAX_QUEUE_LEN", min=0, help="Queued requests at most (0 = unlimited)."
        ),
    ] = 100,
    queue_timeout: Annotated[
        float,
        typer.Option(
            envvar="QUEUE_TIMEOUT_SECS",
            callback=_seconds,
            help="Seconds a request may wait queued (0 = none).",
        ),
    ] = 30,
    request_timeout: Annotated[
        float,
        typer.Option(
            envvar="REQUEST_TIMEOUT_SECS",
            callback=_seconds,
            help="Seconds a request may be in flight (0 = none).",
        ),
    ] = 300,
    log_level: Annotated[
        str, typer.Option(envvar="LOG_LEVEL", help="e.g. debug, relay=debug.")
    ] = "info",
    log_format: Annotated[LogFormat, typer.Option(envvar="LOG_FORMAT")] = LogFormat.TEXT,
    admin_token: Annotated[
        str | None, typer.Option(envvar="MODELRELAY_ADMIN_TOKEN", help="Bearer token for /admin/*.")
    ] = None,
    require_api_keys: Annotated[
        bool,
        typer.Option(
            envvar="MODELRELAY_REQUIRE_API_KEYS", help="Inference needs a client API key."
        ),
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(envvar="MODELRELAY_DATA_DIR", help="Where the key store lives.")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="PostgreSQL URL for the key store.")
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(envvar="HEARTBEAT_INTERVAL_SECS", min=0.01, help="Ping period, seconds."),
    ] = 15,
    heartbeat_timeout: Annotated[
        float,
        typer.Option(
            envvar="HEARTBEAT_TIMEOUT_SECS", min=0.01, help="Silence before a worker is gone."
        ),
    ] = 45,
    drain_timeout: Annotated[
        float,
        typer.Option(
            envvar="DRAIN_TIMEOUT_SECS",
            callback=_seconds,
            help="How long shutdown waits for in-flight work.",
        ),
    ] = 30,
    max_body_bytes: Annotated[
        str, typer.Option(envvar="MAX_BODY_BYTES", help="Largest client body accepted.")
    ] = "32MiB",
    max_frame_bytes: Annotated[
        str, typer.Option(envvar="MAX_FRAME_BYTES", help="Largest WebSocket frame from an agent.")
    ] = "64MiB",
    max_response_bytes: Annotated[
        str,
        typer.Option(envvar="MAX_RESPONSE_BYTES", help="Largest response relayed for one request."),
    ] = "1GiB",
    body_timeout: Annotated[
        float,
        typer.Option(
            envvar="BODY_TIMEOUT_SECS",
            callback=_seconds,
            help="Seconds a request body may take to arrive after its head (0 = none).",
        ),
    ] = 30,
    max_pending_body_bytes: Annotated[
        str,
        typer.Option(
            envvar="MAX_PENDING_BODY_BYTES",
            help="Request bodies held at once across requests not yet dispatched.",
        ),
    ] = "256MiB",
    console: Annotated[
        bool,
        typer.Option(
            "--console/--no-console",
            envvar="MODELRELAY_CONSOLE",
            help="The web console under /console (needs --admin-token to log in).",
        ),
    ] = True,
    http_front: Annotated[
        HttpFront,
        typer.Option(
            envvar="HTTP_FRONT",
            help="builtin (h11 on the socket, Hypercorn only for HTTP/2 and other upgrades) "
            "or hypercorn (every connection on Hypercorn + Quart-Trio).",
        ),
    ] = HttpFront.BUILTIN,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            callback=_load_config_file,
            is_eager=True,
            exists=True,
            dir_okay=False,
            help="TOML file of settings (flag > env > file > default).",
        ),
    ] = None,
) -> None:
    """Serve the relay: clients on /v1/*, agents on /v1/worker/connect."""
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--listen'") from None
    if not worker_secret:
        raise typer.BadParameter("must not be empty", param_hint="'--worker-secret'")
    if database_url and not database_url.startswith(("postgresql://", "postgres://")):
        raise typer.BadParameter(
            "expected a PostgreSQL URL like postgresql://user@host/db",
            param_hint="'--database-url'",
        )
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
            raise typer.BadParameter(exc.message, param_hint=f"'--{name}'") from None
    try:
        configure_logging(log_level, log_format.value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--log-level'") from None
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
        max_body_bytes=sizes["max-body-bytes"],
        max_frame_bytes=sizes["max-frame-bytes"],
        max_response_bytes=sizes["max-response-bytes"],
        body_timeout=body_timeout,
        max_pending_body_bytes=sizes["max-pending-body-bytes"],
        console=console,
        http_front=http_front.value,
    )
    from relay.keys import KeyStoreError
    from relay.server import run_relay

    try:
        code = trio.run(run_relay, cfg, strict_exception_groups=True)
    except* OSError as group:  # e.g. the port is taken
        first = group.exceptions[0]
        reason = getattr(first, "strerror", None) or first
        typer.echo(f"relay: error: cannot listen on {cfg.listen}: {reason}", err=True)
        raise typer.Exit(1) from None
    except* KeyStoreError as group:  # the key database cannot be opened
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        typer.echo(f"relay: error: {leaf}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


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
app.command("serve")(serve)

serve_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
serve_app.command()(serve)


def _run(typer_app: typer.Typer, prog: str) -> None:
    command = typer.main.get_command(typer_app)
    try:
        code = command.main(prog_name=prog, standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = 1
    except typer.TyperException as exc:
        # One clear line naming the flag, never a traceback (cli.md).
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"{prog}: error: {message}", err=True)
        code = getattr(exc, "exit_code", 2)
    sys.exit(code or 0)


def main() -> None:
    _run(app, "relay")


def serve_main() -> None:
    """`modelrelay-server`: the same as `relay serve`."""
    _run(serve_app, "modelrelay-server")
