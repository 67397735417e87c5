"""``agent llamafile``: pick, download, run and relay a llamafile model.

Every command takes ``--json`` (one JSON document on stdout, for scripts) and
turns every expected failure into one line, ``agent: error: ...`` on stderr
(or ``{"ok": false, "error": KIND, "message": ...}`` with ``--json``) and exit
code 1; no traceback. Progress bars and logs go to stderr.

Commands run synchronously; the ones that do network I/O run one `trio.run`
each (download, health checks, ``test``, ``serve``).
"""

import contextlib
import functools
import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import attrs
import cattrs
import typer

from agent.llamafile import catalog as catalog_mod
from agent.llamafile.catalog import TAGS, Catalog, Model, load_catalog
from agent.llamafile.errors import (
    LlamafileError,
    NoPermission,
    NotRunning,
    ServeError,
    UnknownModel,
)
from agent.llamafile.fit import Fit, assess, recommend
from agent.llamafile.hardware import Hardware, detect
from agent.llamafile.paths import Home
from agent.llamafile.settings import KEYS, Settings, load_settings, save_settings, shown, validate
from agent.llamafile.state import RunState, live_states, read_state, remove_state, write_state
from agent.llamafile.units import human_bytes

__all__ = ["app"]

app = typer.Typer(
    name="llamafile",
    help="Pick, download and serve a llamafile model, and relay it (agent in-process).",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(
    name="config",
    help="Persistent defaults (relay-url, worker-secret, port, ...).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(config_app, name="config")

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help="A catalog slug or file name.")]
P = ParamSpec("P")
R = TypeVar("R")

STOP_GRACE_SECS = 15.0  # on top of the drain timeout


def _home() -> Home:
    return Home.default()


def _emit(as_json: bool, data: object, text: str | list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        typer.echo(text if isinstance(text, str) else "\n".join(text))


def _errors(func: Callable[P, R]) -> Callable[P, R]:
    """Expected failures → one line (or a JSON error document) and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LlamafileError as exc:
            if kwargs.get("as_json"):
                typer.echo(json.dumps({"ok": False, "error": exc.kind, "message": exc.message}))
            else:
                typer.echo(f"agent: error: {exc.message}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _catalog(home: Home) -> Catalog:
    return load_catalog(home.fetched_catalog, home.user_catalog)


def _hardware() -> Hardware:
    try:
        return detect()
    except ValueError as exc:
        raise LlamafileError(str(exc)) from None


def _settings(home: Home) -> Settings:
    return load_settings(home.config)


def _ensure(home: Home) -> None:
    try:
        home.ensure()
    except PermissionError as exc:
        raise NoPermission(f"not allowed to create {exc.filename}: {exc.strerror}") from None
    except OSError as exc:
        raise LlamafileError(f"cannot create {exc.filename}: {exc.strerror}") from None


def _model_json(model: Model) -> dict[str, Any]:
    return cattrs.unstructure(model)  # type: ignore[no-any-return]


def _fit_json(fit: Fit) -> dict[str, Any]:
    return {
        "mark": str(fit.mark),
        "where": fit.where,
        "need_gb": fit.need_gb,
        "budget_gb": round(fit.budget_gb, 2),
        "reason": fit.reason,
    }


def _hardware_json(hw: Hardware) -> dict[str, Any]:
    return cattrs.unstructure(hw)  # type: ignore[no-any-return]


def _hardware_line(hw: Hardware) -> str:
    gpus = ", ".join(f"{g.name} {g.vram_gb:.1f} GB" for g in hw.gpus) or "no GPU"
    kind = " (unified memory)" if hw.unified else ""
    return f"this box: {hw.ram_gb:.1f} GB RAM, {gpus}{kind} [{hw.source}]"


# --- choosing ------------------------------------------------------------------


@app.command("recommend")
@_errors
def recommend_command(
    tag: Annotated[str | None, typer.Option(help=f"Only this tag ({', '.join(TAGS)}).")] = None,
    as_json: JsonOption = False,
) -> None:
    """The best model this box can run, per tag, and why."""
    home = _home()
    hw = _hardware()
    if tag is not None and tag not in TAGS:
        raise LlamafileError(f"--tag {tag!r} is not one of {', '.join(TAGS)}")
    picks = recommend(list(_catalog(home).models), hw, (tag,) if tag else TAGS)
    data = {
        "hardware": _hardware_json(hw),
        "picks": [
            {
                "tag": p.tag,
                "model": p.model.slug if p.model else None,
                "fit": _fit_json(p.fit) if p.fit else None,
                "why": p.why,
            }
            for p in picks
        ],
    }
    lines = [_hardware_line(hw)]
    for pick in picks:
        lines.append(f"{pick.tag:>9}: {pick.model.slug if pick.model else '-'}")
        lines.append(f"           {pick.why}")
    _emit(as_json, data, lines)


@app.command("list")
@_errors
def list_command(
    tag: Annotated[str | None, typer.Option(help="Only models with this tag.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The catalog, with fit marks, downloads and running models."""
    home = _home()
    catalog = _catalog(home)
    hw = _hardware()
    running = {s.slug for s in live_states(home)[0]}
    rows = []
    for model in catalog.tagged(tag):
        fit = assess(model, hw)
        rows.append(
            {
                **_model_json(model),
                "source": catalog.sources[model.slug],
                "fit": _fit_json(fit),
                "downloaded": (home.models / model.file).exists(),
                "running": model.slug in running,
            }
        )
    lines = [f"{'MODEL':28} {'SIZE':>8} {'RAM':>6}  {'FIT':9} {'TAGS':22} STATE"]
    for row in rows:
        state = "running" if row["running"] else "downloaded" if row["downloaded"] else ""
        lines.append(
            f"{row['slug']:28} {human_bytes(row['size_bytes']):>8} {row['ram_gb']:>4.1f}GB  "
            f"{row['fit']['mark']:9} {','.join(row['tags']):22} {state}".rstrip()
        )
    lines.append(_hardware_line(hw))
    _emit(
        as_json,
        {"revision": catalog.revision, "hardware": _hardware_json(hw), "models": rows},
        lines,
    )


# --- downloading -----------------------------------------------------------------


def _download(home: Home, model: Model, quiet: bool) -> dict[str, Any]:
    import httpx
    import trio

    from agent.llamafile.download import DownloadResult, Progress, download

    _ensure(home)
    dest = home.models / model.file
    if model.url.startswith("file://") and not dest.exists():
        raise UnknownModel(f"{model.slug} was imported from {model.url}: import it again")

    async def fetch() -> DownloadResult:
        timeout = httpx.Timeout(30.0, connect=15.0)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            return await download(
                client, model.url, dest, sha256=model.sha256, progress=Progress(enabled=not quiet)
            )

    if not quiet and not dest.exists():
        typer.echo(
            f"downloading {model.slug} ({human_bytes(model.size_bytes)}) from {model.url}", err=True
        )
    result = trio.run(fetch)
    if model.sha256 is None and not result.already:
        typer.echo(
            f"warning: the catalog has no sha256 for {model.slug}; not verified "
            f"(its sha256 is {result.sha256})",
            err=True,
        )
    return {
        "model": model.slug,
        "path": str(result.path),
        "size": result.size,
        "sha256": result.sha256,
        "verified": result.verified,
        "resumed_from": result.resumed_from,
        "already": result.already,
    }


def _download_text(info: dict[str, Any]) -> str:
    if info["already"]:
        return f"{info['model']} is already downloaded: {info['path']}"
    how = "sha256 verified" if info["verified"] else "not verified (no sha256 in the catalog)"
    resumed = f", resumed at {human_bytes(info['resumed_from'])}" if info["resumed_from"] else ""
    return (
        f"downloaded {info['model']} ({human_bytes(info['size'])}{resumed}, {how}): {info['path']}"
    )


@app.command("download")
@_errors
def download_command(
    model: ModelArg,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Download a model (resumes a broken download; verifies its sha256)."""
    home = _home()
    info = _download(home, _catalog(home).get(model), quiet or as_json)
    _emit(as_json, {"ok": True, **info}, _download_text(info))


# --- running ---------------------------------------------------------------------


def _server_plan(
    home: Home,
    entry: Model,
    settings: Settings,
    *,
    port: int | None,
    gpu: str | None,
    ctx: int | None,
    binary: str | None,
    parallel: int,
    extra: list[str],
    hw: Hardware,
) -> tuple[list[str], int]:
    from agent.llamafile.runner import check_port, gpu_layers, server_argv

    chosen = port if port is not None else int(settings.get("port", 0))
    actual = check_port(chosen)
    ngl = gpu_layers(gpu or str(settings.get("gpu", "auto")), bool(hw.gpus))
    context = ctx or int(settings.get("ctx", 0)) or entry.context
    program = binary or entry.binary or None
    if program and not Path(program).exists() and shutil.which(program) is None:
        raise ServeError(f"--binary {program!r} is not a file or a program on PATH")
    argv = server_argv(
        home.models / entry.file,
        binary=program,
        port=actual,
        ctx=context,
        ngl=ngl,
        alias=entry.slug,
        parallel=parallel,
        extra=extra,
    )
    return argv, actual


def _ensure_downloaded(home: Home, entry: Model, quiet: bool) -> None:
    if not (home.models / entry.file).exists():
        _download(home, entry, quiet)


def _not_running_twice(home: Home, slug: str) -> None:
    live, _ = live_states(home)
    for state in live:
        if state.slug == slug:
            raise ServeError(
                f"{slug} is already running (PID {state.pid}, {state.url}); "
                f"`agent llamafile stop {slug}` first"
            )


PortOption = Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (0 = a free one).")]
GpuOption = Annotated[str | None, typer.Option(help="GPU layers: auto, none, or a number.")]
CtxOption = Annotated[int | None, typer.Option(help="Context length [default: the catalog's].")]
BinaryOption = Annotated[
    str | None, typer.Option(help="A llama-server-compatible program to run the model with.")
]
ExtraArg = Annotated[
    list[str] | None, typer.Argument(metavar="[-- EXTRA...]", help="Passed to the model server.")
]
StartupOption = Annotated[float, typer.Option(help="Seconds the model may take to load.")]


@app.command("run")
@_errors
def run_command(
    model: ModelArg,
    extra: ExtraArg = None,
    port: PortOption = None,
    gpu: GpuOption = None,
    ctx: CtxOption = None,
    binary: BinaryOption = None,
    parallel: Annotated[int, typer.Option(help="Requests at once.")] = 1,
    startup_timeout: StartupOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Start the model server in the background (no agent); see `serve` for the relay."""
    import trio

    from agent.llamafile.runner import spawn_detached, wait_healthy

    home = _home()
    _ensure(home)
    entry = _catalog(home).get(model)
    _not_running_twice(home, entry.slug)
    _ensure_downloaded(home, entry, as_json)
    argv, actual = _server_plan(
        home,
        entry,
        _settings(home),
        port=port,
        gpu=gpu,
        ctx=ctx,
        binary=binary,
        parallel=parallel,
        extra=list(extra or []),
        hw=_hardware(),
    )
    popen = spawn_detached(argv, home.log_file(entry.slug))
    args = (
        "run",
        entry.slug,
        "--port",
        str(actual),
        *(["--gpu", gpu] if gpu else []),
        *(["--ctx", str(ctx)] if ctx else []),
        *(["--binary", binary] if binary else []),
        "--parallel",
        str(parallel),
        *(["--", *extra] if extra else []),
    )
    state = RunState(entry.slug, "run", popen.pid, popen.pid, actual, time.time(), argv[0], args)
    write_state(home, state)

    async def healthy() -> None:
        with trio.fail_after(startup_timeout):
            await wait_healthy(state.url, popen.poll)

    try:
        trio.run(healthy)
    except (ServeError, trio.TooSlowError) as exc:
        popen.kill()
        popen.wait()
        remove_state(home, entry.slug)
        why = (
            exc.message if isinstance(exc, ServeError) else f"no answer in {startup_timeout:.0f} s"
        )
        raise ServeError(
            f"{entry.slug} did not start: {why}; see `agent llamafile logs {entry.slug}`"
        ) from None
    data = {"ok": True, "model": entry.slug, "url": state.url, "pid": state.pid, "port": actual}
    _emit(as_json, data, f"{entry.slug} is running at {state.url} (PID {state.pid})")


def _secret(home: Home, flag: str | None) -> str | None:
    value = flag or os.environ.get("WORKER_SECRET") or _settings(home).get("worker-secret")
    return str(value) if value else None


@app.command("serve")
@_errors
def serve_command(
    model: ModelArg,
    extra: ExtraArg = None,
    relay_url: Annotated[
        str | None, typer.Option(envvar="PROXY_URL", help="The relay [default: config relay-url].")
    ] = None,
    worker_secret: Annotated[
        str | None,
        typer.Option(
            help="The relay's worker secret [default: $WORKER_SECRET, then config].",
            show_default=False,
        ),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Provider to register under.")] = None,
    worker_name: Annotated[str | None, typer.Option(help="Name on the dashboard.")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Requests at once (also the server's slots).")
    ] = None,
    port: PortOption = None,
    gpu: GpuOption = None,
    ctx: CtxOption = None,
    binary: BinaryOption = None,
    drain_timeout: Annotated[float, typer.Option(help="Seconds a stop waits for requests.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="The agent's log level.")] = "info",
    log_format: Annotated[str, typer.Option(help="text or json.")] = "text",
    startup_timeout: StartupOption = 300.0,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; return once ready.")
    ] = False,
    ready_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
    as_json: JsonOption = False,
) -> None:
    """Start the model server, then the agent against it: the model is on the relay."""
    home = _home()
    _ensure(home)
    settings = _settings(home)
    entry = _catalog(home).get(model)
    relay = relay_url or settings.get("relay-url")
    if not relay:
        raise LlamafileError(
            "no relay: pass --relay-url or `agent llamafile config set relay-url URL`"
        )
    secret = _secret(home, worker_secret)
    if not secret:
        raise LlamafileError(
            "no worker secret: pass --worker-secret, set WORKER_SECRET, or "
            "`agent llamafile config set worker-secret S`"
        )
    concurrency = max_concurrency or int(settings.get("max-concurrency", 1))
    if ready_fd is None:
        _not_running_twice(home, entry.slug)
    _ensure_downloaded(home, entry, as_json)
    if detach:
        _serve_detached(
            home,
            entry,
            secret,
            [
                "--relay-url",
                str(relay),
                "--max-concurrency",
                str(concurrency),
                *(["--provider", provider] if provider else []),
                *(["--worker-name", worker_name] if worker_name else []),
                *(["--port", str(port)] if port is not None else []),
                *(["--gpu", gpu] if gpu else []),
                *(["--ctx", str(ctx)] if ctx else []),
                *(["--binary", binary] if binary else []),
                "--drain-timeout",
                str(drain_timeout),
                "--log-level",
                log_level,
                "--log-format",
                log_format,
                "--startup-timeout",
                str(startup_timeout),
                *(["--", *extra] if extra else []),
            ],
            as_json,
        )
        return
    _serve_foreground(
        home,
        entry,
        settings,
        secret,
        str(relay),
        concurrency,
        {
            "provider": provider or settings.get("provider", "local"),
            "worker_name": worker_name or settings.get("worker-name"),
            "drain_timeout": drain_timeout,
            "log_level": log_level,
            "log_format": log_format,
        },
        port=port,
        gpu=gpu,
        ctx=ctx,
        binary=binary,
        extra=list(extra or []),
        startup_timeout=startup_timeout,
        ready_fd=ready_fd,
        as_json=as_json,
    )


def _serve_foreground(
    home: Home,
    entry: Model,
    settings: Settings,
    secret: str,
    relay: str,
    concurrency: int,
    agent_options: dict[str, Any],
    *,
    port: int | None,
    gpu: str | None,
    ctx: int | None,
    binary: str | None,
    extra: list[str],
    startup_timeout: float,
    ready_fd: int | None,
    as_json: bool,
) -> None:
    import trio

    from agent.config import AgentConfig
    from agent.errors import ConfigError
    from agent.llamafile.serve import ServePlan, serve
    from agent.logging import configure_logging

    ready_out = os.fdopen(ready_fd, "w") if ready_fd is not None else None

    def ready(info: dict[str, Any]) -> None:
        if ready_out is not None:
            ready_out.write(json.dumps({"ok": True, **info}) + "\n")
            ready_out.close()
        elif as_json:
            typer.echo(json.dumps({"ok": True, **info}))
        else:
            typer.echo(_ready_line(entry.slug, info), err=True)

    try:
        argv, actual = _server_plan(
            home,
            entry,
            settings,
            port=port,
            gpu=gpu,
            ctx=ctx,
            binary=binary,
            parallel=concurrency,
            extra=extra,
            hw=_hardware(),
        )
        try:
            config = AgentConfig.create(
                proxy_url=relay,
                worker_secret=secret,
                backend_url=f"http://127.0.0.1:{actual}",
                max_concurrency=concurrency,
                **agent_options,
            )
        except ConfigError as exc:
            option = "--relay-url" if exc.option == "--proxy-url" else exc.option
            raise LlamafileError(f"{option}: {exc.message}") from None
        args = (
            "serve",
            entry.slug,
            "--relay-url",
            relay,
            "--port",
            str(actual),
            "--max-concurrency",
            str(concurrency),
            *(["--gpu", gpu] if gpu else []),
            *(["--ctx", str(ctx)] if ctx else []),
            *(["--binary", binary] if binary else []),
            *(["--", *extra] if extra else []),
        )
        configure_logging(config.log_level, config.log_format)
        plan = ServePlan(entry.slug, tuple(argv), actual, config, args, startup_timeout)
        code = trio.run(serve, plan, home, ready)
    except LlamafileError as exc:
        if ready_out is not None and not ready_out.closed:
            ready_out.write(
                json.dumps({"ok": False, "error": exc.kind, "message": exc.message}) + "\n"
            )
            ready_out.close()
        raise
    raise typer.Exit(code)


def _serve_detached(
    home: Home, entry: Model, secret: str, options: list[str], as_json: bool
) -> None:
    from agent.llamafile.runner import spawn_detached

    if sys.platform == "win32":  # pragma: no cover - Windows only
        raise LlamafileError(
            "--detach needs an inherited pipe (POSIX only): run serve in the foreground"
        )
    read_fd, write_fd = os.pipe()
    # The secret travels in the environment, never on a command line (`ps`).
    env = {**os.environ, "WORKER_SECRET": secret}
    argv = [
        sys.executable,
        "-m",
        "agent",
        "llamafile",
        "serve",
        entry.slug,
        *_before_extra(options),
        "--ready-fd",
        str(write_fd),
        *_extra(options),
    ]
    log = home.log_file(entry.slug)
    try:
        popen = spawn_detached(argv, log, pass_fds=(write_fd,), env=env)
    finally:
        os.close(write_fd)
    text = b""
    with os.fdopen(read_fd, "rb") as pipe, selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        deadline = time.monotonic() + float(options[options.index("--startup-timeout") + 1]) + 60
        while b"\n" not in text and time.monotonic() < deadline:
            if selector.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                text += chunk
    line = text.split(b"\n", 1)[0]
    try:
        info = json.loads(line) if line else None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        # The pipe closed without a word: the child failed before it could
        # report (its error line is in the log). Let it finish exiting.
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(10)
        code = popen.poll()
        if code is None:
            popen.terminate()  # never ready: SIGTERM, so it stops its model server too
        last = _last_line(log)
        raise ServeError(
            f"serve {entry.slug} "
            + (f"exited with code {code}" if code is not None else "did not become ready")
            + (f" ({last})" if last else "")
            + f"; see `agent llamafile logs {entry.slug}`"
        )
    if not info.get("ok"):
        error = LlamafileError(str(info.get("message")))
        error.kind = str(info.get("error", "error"))
        raise error
    _emit(as_json, info, _ready_line(entry.slug, info))


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _ready_line(slug: str, info: dict[str, Any]) -> str:
    link = "connected" if info["relay_connected"] else "NOT connected yet (still trying)"
    return f"{slug} serving at {info['url']} (PID {info['pid']}); relay {info['relay']}: {link}"


def _before_extra(options: list[str]) -> list[str]:
    return options[: options.index("--")] if "--" in options else options


def _extra(options: list[str]) -> list[str]:
    return options[options.index("--") :] if "--" in options else []


# --- watching --------------------------------------------------------------------


def _uptime(secs: float) -> str:
    secs = int(secs)
    return (
        f"{secs // 86400}d{secs // 3600 % 24:02d}h"
        if secs >= 86400
        else (
            f"{secs // 3600}h{secs // 60 % 60:02d}m"
            if secs >= 3600
            else f"{secs // 60}m{secs % 60:02d}s"
        )
    )


def _health(url: str) -> str:
    import httpx

    try:
        return "ok" if httpx.get(f"{url}/health", timeout=2).status_code == 200 else "loading"
    except httpx.HTTPError:
        return "down"


@app.command("status")
@_errors
def status_command(as_json: JsonOption = False) -> None:
    """Running models: model, port, PID, uptime, health, relay connection."""
    home = _home()
    live, cleaned = live_states(home)
    rows = [
        {
            **cattrs.unstructure(s),
            "url": s.url,
            "uptime_secs": int(s.uptime()),
            "health": _health(s.url),
        }
        for s in live
    ]
    lines = [f"{'MODEL':28} {'KIND':5} {'PORT':>5} {'PID':>7} {'UPTIME':>7} {'HEALTH':7} RELAY"]
    for row in rows:
        relay = (
            "-"
            if row["kind"] == "run"
            else (f"connected ({row['worker_id']})" if row["relay_connected"] else "disconnected")
        )
        if row["relay_url"]:
            relay += f" {row['relay_url']}"
        lines.append(
            f"{row['slug']:28} {row['kind']:5} {row['port']:>5} {row['pid']:>7} "
            f"{_uptime(row['uptime_secs']):>7} {row['health']:7} {relay}"
        )
    if not rows:
        lines = ["nothing running"]
    lines += [f"cleaned: {note}" for note in cleaned]
    _emit(as_json, {"running": rows, "cleaned": cleaned}, lines)


@app.command("logs")
@_errors
def logs_command(
    model: ModelArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many last lines.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The model server's log (and the agent's, for `serve --detach`)."""
    home = _home()
    slug = _catalog(home).get(model).slug
    path = home.log_file(slug)
    if not path.exists():
        raise NotRunning(f"no log for {slug} yet ({path})")
    with path.open("rb") as handle:
        tail = handle.read().decode("utf-8", "replace").splitlines()[-lines:] if lines > 0 else []
        if as_json:
            _emit(True, {"model": slug, "path": str(path), "lines": tail}, "")
            return
        for line in tail:
            typer.echo(line)
        while follow:
            # A file has no portable "grew" event: check it four times a second.
            chunk = handle.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.25)


def _stop_one(home: Home, state: RunState, timeout: float) -> dict[str, Any]:
    from agent.llamafile.runner import stop_pid

    clean = stop_pid(state.pid, timeout, extra=state.backend_pid)
    remove_state(home, state.slug)
    return {"model": state.slug, "pid": state.pid, "clean": clean}


@app.command("stop")
@_errors
def stop_command(
    model: Annotated[str, typer.Argument(metavar="MODEL|all")],
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait (the agent drains first) before killing.")
    ] = 30.0 + STOP_GRACE_SECS,
    as_json: JsonOption = False,
) -> None:
    """Stop a model (the agent drains in-flight requests first), or all of them."""
    home = _home()
    live, _ = live_states(home)
    if model == "all":
        targets = live
    else:
        slug = _catalog(home).get(model).slug
        targets = [s for s in live if s.slug == slug]
        if not targets:
            raise NotRunning(f"{slug} is not running")
    done = [_stop_one(home, state, timeout) for state in targets]
    text = [
        f"stopped {d['model']} (PID {d['pid']}"
        + (")" if d["clean"] else ", killed after the timeout)")
        for d in done
    ] or ["nothing running"]
    _emit(as_json, {"ok": True, "stopped": done}, text)


@app.command("restart")
@_errors
def restart_command(model: ModelArg, as_json: JsonOption = False) -> None:
    """Stop a running model and start it again with the same options."""
    home = _home()
    slug = _catalog(home).get(model).slug
    state = read_state(home, slug)
    live, _ = live_states(home)
    if state is None or all(s.slug != slug for s in live):
        raise NotRunning(f"{slug} is not running: nothing to restart")
    _stop_one(home, state, 30.0 + STOP_GRACE_SECS)
    flags = ["--detach"] if state.kind == "serve" else []
    flags += ["--json"] if as_json else []
    # Our flags go before any `--`: what follows it belongs to the model server.
    args = [*_before_extra(list(state.args)), *flags, *_extra(list(state.args))]
    # A serve finds its worker secret again in $WORKER_SECRET or `config` (never in state).
    done = subprocess.run([sys.executable, "-m", "agent", "llamafile", *args], check=False)
    raise typer.Exit(done.returncode)


@app.command("test")
@_errors
def ask_command(
    model: ModelArg,
    prompt: Annotated[str, typer.Option(help="What to ask.")] = "Say hello in five words.",
    max_tokens: Annotated[int, typer.Option(help="Longest answer.")] = 32,
    via_relay: Annotated[
        bool, typer.Option("--via-relay", help="Ask through the relay instead of directly.")
    ] = False,
    api_key: Annotated[
        str | None, typer.Option(help="Client API key for the relay [default: config api-key].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ask a running model one question (directly, or through the relay)."""
    import httpx

    home = _home()
    slug = _catalog(home).get(model).slug
    live, _ = live_states(home)
    state = next((s for s in live if s.slug == slug), None)
    if state is None:
        raise NotRunning(f"{slug} is not running (agent llamafile run/serve {slug})")
    base = state.url
    headers = {}
    if via_relay:
        if not state.relay_url:
            raise LlamafileError(f"{slug} was started with `run`: no relay to ask through")
        base = state.relay_url.rstrip("/")
        key = api_key or _settings(home).get("api-key")
        if key:
            headers["Authorization"] = f"Bearer {key}"
    body = {
        "model": slug,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    start = time.monotonic()
    try:
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=300)
    except httpx.HTTPError as exc:
        raise LlamafileError(f"{base} did not answer: {exc}") from None
    secs = time.monotonic() - start
    if reply.status_code != 200:
        raise LlamafileError(f"{base} answered HTTP {reply.status_code}: {reply.text[:300]}")
    try:
        doc = reply.json()
        text = doc["choices"][0]["message"]["content"]
        tokens = int(doc.get("usage", {}).get("completion_tokens", 0))
    except (ValueError, KeyError, IndexError, TypeError):
        raise LlamafileError(f"{base} answered something that is not a chat completion") from None
    data = {
        "ok": True,
        "model": slug,
        "via": "relay" if via_relay else "direct",
        "url": base,
        "reply": text,
        "completion_tokens": tokens,
        "seconds": round(secs, 3),
    }
    rate = f", {tokens / secs:.1f} tokens/s" if secs > 0 and tokens else ""
    _emit(
        as_json,
        data,
        [text.strip(), f"-- {tokens} tokens in {secs:.2f} s{rate} via {data['via']} ({base})"],
    )


# --- managing files ----------------------------------------------------------------


@app.command("import")
@_errors
def import_command(
    file: Annotated[Path, typer.Argument(help="A .llamafile (or a .gguf, with --binary).")],
    slug: Annotated[
        str | None, typer.Option(help="Name to use [default: from the file name].")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tags (repeat) [default: chat].")] = None,
    ctx: Annotated[int, typer.Option(help="Context length.")] = 4096,
    ram_gb: Annotated[
        float | None, typer.Option(help="RAM needed [default: file size + 20 %].")
    ] = None,
    binary: BinaryOption = None,
    move: Annotated[bool, typer.Option(help="Move the file instead of copying it.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a model file you already have to the user catalog and the models folder."""
    import re

    from agent.llamafile.download import sha256_file

    home = _home()
    _ensure(home)
    if not file.is_file():
        raise UnknownModel(f"{file} is not a file")
    name = slug or re.sub(r"[^a-z0-9._-]+", "-", file.name.lower().rsplit(".", 1)[0]).strip("-.")
    size = file.stat().st_size
    try:
        entry = Model(
            slug=name,
            name=file.name,
            file=file.name,
            url=file.resolve().as_uri(),
            size_bytes=size,
            ram_gb=ram_gb or round(size * 1.2 / 1024**3, 2) or 0.01,
            context=ctx,
            licence="unknown",
            tags=tuple(tag or ["chat"]),
            sha256=sha256_file(file).hexdigest(),
            binary=binary or "",
            notes=f"imported from {file}",
        )
    except ValueError as exc:
        raise LlamafileError(f"cannot import {file}: {exc}") from None
    dest = home.models / entry.file
    try:
        if file.resolve() != dest.resolve():
            (shutil.move if move else shutil.copy2)(file, dest)
        dest.chmod(dest.stat().st_mode | 0o111)
        user = catalog_mod.read_catalog_file(home.user_catalog)
        text = catalog_mod.dump_catalog(catalog_mod.with_model(user, entry))
        home.user_catalog.write_text(text, encoding="utf-8")
    except PermissionError as exc:
        raise NoPermission(f"not allowed to write {exc.filename}: {exc.strerror}") from None
    except OSError as exc:
        raise LlamafileError(f"cannot import {file}: {exc.strerror}") from None
    _emit(
        as_json,
        {"ok": True, **_model_json(entry), "path": str(dest)},
        f"imported {file} as {entry.slug} ({human_bytes(size)}): {dest}",
    )


@app.command("rm")
@_errors
def rm_command(
    model: ModelArg,
    force: Annotated[bool, typer.Option(help="Stop it first if it is running.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a downloaded model (and any partial download)."""
    home = _home()
    entry = _catalog(home).get(model)
    live, _ = live_states(home)
    running = next((s for s in live if s.slug == entry.slug), None)
    if running is not None:
        if not force:
            raise ServeError(f"{entry.slug} is running: stop it first (or rm --force)")
        _stop_one(home, running, 30.0 + STOP_GRACE_SECS)
    removed: list[dict[str, Any]] = []
    for path in (home.models / entry.file, home.models / (entry.file + ".part")):
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            removed.append({"path": str(path), "size": size})
    if not removed:
        raise UnknownModel(f"{entry.slug} is not downloaded")
    _emit(
        as_json,
        {"ok": True, "model": entry.slug, "removed": removed},
        [f"removed {r['path']} ({human_bytes(r['size'])})" for r in removed],
    )


# No catalog URL is built in: the project publishes none yet, and a guessed
# address would fetch whatever lives there. `--url` or `config set catalog-url`.
DEFAULT_CATALOG_URL = ""


@app.command("update-catalog")
@_errors
def update_catalog_command(
    url: Annotated[
        str | None, typer.Option(help="Catalog URL [default: config catalog-url].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fetch a newer catalog (TOML); an invalid one is refused and the old one kept."""
    import httpx

    from agent.llamafile.errors import CatalogError

    home = _home()
    _ensure(home)
    source = url or str(_settings(home).get("catalog-url", DEFAULT_CATALOG_URL))
    if not source:
        raise CatalogError(
            "no catalog URL: pass --url URL, or set one with "
            "`agent llamafile config set catalog-url URL`; kept the current catalog"
        )
    try:
        with httpx.stream("GET", source, timeout=30, follow_redirects=True) as response:
            if response.status_code != 200:
                raise CatalogError(
                    f"{source} answered HTTP {response.status_code}; kept the current catalog"
                )
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > catalog_mod.MAX_CATALOG_BYTES:
                    raise CatalogError(
                        f"{source} is larger than 1 MB: not a catalog; kept the current catalog"
                    )
            kind = response.headers.get("content-type", "")
    except httpx.HTTPError as exc:
        raise CatalogError(f"cannot fetch {source}: {exc}; kept the current catalog") from None
    if "html" in kind or body.lstrip()[:1] == b"<":
        raise CatalogError(
            f"{source} is an HTML page, not a catalog (TOML); kept the current catalog"
        )
    try:
        text = body.decode("utf-8")
        new = catalog_mod.parse_catalog(text, source)
    except UnicodeDecodeError:
        raise CatalogError(f"{source} is not UTF-8 text; kept the current catalog") from None
    except CatalogError as exc:
        raise CatalogError(f"{exc.message}; kept the current catalog") from None
    if not new.models:
        raise CatalogError(f"{source} lists no models; kept the current catalog")
    tmp = home.fetched_catalog.with_name("catalog.toml.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, home.fetched_catalog)
    except OSError as exc:
        raise NoPermission(f"cannot write {home.fetched_catalog}: {exc.strerror}") from None
    merged = _catalog(home)
    note = (
        ""
        if merged.revision == new.revision
        else (f" (older than the shipped revision {merged.revision}: the shipped one stays in use)")
    )
    _emit(
        as_json,
        {
            "ok": True,
            "url": source,
            "revision": new.revision,
            "models": len(new.models),
            "in_use": merged.revision,
        },
        f"catalog revision {new.revision} with {len(new.models)} model"
        f"{'' if len(new.models) == 1 else 's'} from {source}{note}",
    )


@app.command("doctor")
@_errors
def doctor_command(as_json: JsonOption = False) -> None:
    """Check everything a model needs to run here, one line per check."""
    from agent.llamafile.doctor import run_checks

    home = _home()
    checks = run_checks(home, _settings(home))
    failed = any(c.status == "fail" for c in checks)
    _emit(
        as_json,
        {"ok": not failed, "checks": [attrs.asdict(c) for c in checks]},
        [f"{c.status.upper():4}  {c.name:10} {c.detail}" for c in checks],
    )
    if failed:
        raise typer.Exit(1)


# --- config ------------------------------------------------------------------------


@config_app.command("set")
@_errors
def config_set(key: str, value: str, as_json: JsonOption = False) -> None:
    """Set KEY to VALUE."""
    home = _home()
    settings = _settings(home)
    settings[key] = validate(key, value)
    try:
        save_settings(home.config, settings)
    except OSError as exc:
        raise NoPermission(f"cannot write {home.config}: {exc.strerror}") from None
    _emit(
        as_json,
        {"ok": True, "key": key, "value": shown(key, settings[key])},
        f"{key} = {shown(key, settings[key])}",
    )


@config_app.command("get")
@_errors
def config_get(key: str, as_json: JsonOption = False) -> None:
    """Print KEY's value (secrets masked)."""
    validate_key(key)
    value = _settings(_home()).get(key)
    if value is None:
        raise LlamafileError(f"{key} is not set")
    _emit(as_json, {"key": key, "value": shown(key, value)}, str(shown(key, value)))


@config_app.command("unset")
@_errors
def config_unset(key: str, as_json: JsonOption = False) -> None:
    """Remove KEY."""
    validate_key(key)
    home = _home()
    settings = _settings(home)
    existed = settings.pop(key, None) is not None
    save_settings(home.config, settings)
    _emit(
        as_json,
        {"ok": True, "key": key, "removed": existed},
        f"{key} unset" if existed else f"{key} was not set",
    )


@config_app.command("list")
@_errors
def config_list(as_json: JsonOption = False) -> None:
    """Every key: its value (secrets masked), or its meaning when unset."""
    settings = _settings(_home())
    rows = {key: shown(key, settings[key]) if key in settings else None for key in KEYS}
    _emit(
        as_json,
        rows,
        [
            f"{key:16} {rows[key] if rows[key] is not None else '(unset: ' + KEYS[key][1] + ')'}"
            for key in KEYS
        ],
    )


def validate_key(key: str) -> None:
    if key not in KEYS:
        raise LlamafileError(f"unknown config key {key!r} (known: {', '.join(KEYS)})")
