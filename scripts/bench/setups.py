"""The setups under test: the backend itself, nginx, LiteLLM proxy, relay + agents,
and a fleet (two relays behind HAProxy, agents on both).

Each setup starts its processes on 127.0.0.1 (ephemeral ports), waits until
it can serve model ``m``, and knows which of its processes are the "front"
(what the client connects to: nginx, LiteLLM, the relay) and which are
agents, so that CPU and RSS are read per role.
"""

from __future__ import annotations

import contextlib
import http.client as httpclient
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from procutil import Child, free_port, http, wait_until

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV_BIN = ROOT / ".venv" / "bin"
LITELLM_PIN = "litellm[proxy]==1.108.7"
LITELLM_VENV = ROOT / ".venv" / "bench-litellm"
SECRET = "bench-secret"
CONSOLE_TOKEN = "bench-console-admin-token"
# Every client sends it; only LiteLLM checks it (it refuses to start without a master key).
API_KEY = "sk-bench-5f1c0a9e7b3d4c2a8e6f1b0d9c7a5e3f"


class Skipped(Exception):
    """This setup cannot run here; the message says why."""


class Backend:
    def __init__(self, log_dir: Path) -> None:
        self.child = Child(
            "backend",
            [sys.executable, str(HERE / "fastbackend.py"), "--port", "0"],
            log_dir,
            stdout_pipe=True,
        )
        assert self.child.proc.stdout is not None
        line = self.child.proc.stdout.readline().decode().strip()
        if not line.startswith("BACKEND_URL="):
            raise RuntimeError(f"backend did not start: {line!r}\n{self.child.tail()}")
        self.url = line.split("=", 1)[1]

    def profile(self, **profile: object) -> None:
        http("PUT", self.url + "/_control/profile", profile)

    def end_at(self, when: float) -> None:
        http("PUT", self.url + "/_control/end_at", {"end_at": when})

    def release(self) -> None:
        http("POST", self.url + "/_control/release", {})

    def log(self) -> list[dict[str, Any]]:
        return http("GET", self.url + "/_control/log")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return http("GET", self.url + "/_control/stats")  # type: ignore[no-any-return]


class ConsoleWatcher:
    """A logged-in web console left open on the relay: its live stream read throughout.

    The console's promise is that an open dashboard costs the hot path
    nothing; the `relay1c` setup measures relay + 1 agent with one open.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        login = httpclient.HTTPConnection(self.host, self.port, timeout=5)
        form = urllib.parse.urlencode({"token": CONSOLE_TOKEN, "next": "/console"})
        login.request(
            "POST",
            "/console/login",
            body=form,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        answer = login.getresponse()
        answer.read()
        cookie = answer.getheader("set-cookie") or ""
        login.close()
        if answer.status != 303 or not cookie:
            raise RuntimeError(f"console login answered {answer.status}")
        self.cookie = cookie.split(";", 1)[0]
        self.events = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream = httpclient.HTTPConnection(self.host, self.port, timeout=None)
        stream.request("GET", "/console/events", headers={"cookie": self.cookie})
        answer = stream.getresponse()
        with contextlib.suppress(OSError, httpclient.HTTPException):
            for line in answer:  # ends when the relay stops
                if line.startswith(b"data:"):
                    self.events += 1


class Setup:
    """A running setup: where clients go, and its processes by role."""

    name = ""
    label = ""

    def __init__(self) -> None:
        self.url = ""
        self.front: list[Child] = []
        self.agents: list[Child] = []
        self.info: dict[str, Any] = {}
        self.expected_dead: set[Child] = set()  # killed on purpose (failover)

    def children(self) -> list[Child]:
        return [*self.front, *self.agents]

    def check_alive(self) -> None:
        for child in self.children():
            if not child.alive() and child not in self.expected_dead:
                raise RuntimeError(
                    f"{child.name} died (exit {child.proc.returncode}):\n{child.tail()}"
                )

    def stop(self, grace: float = 5.0) -> None:
        for child in reversed(self.children()):
            child.stop(grace)


class Direct(Setup):
    name, label = "direct", "direct"

    def __init__(self, backend: Backend, log_dir: Path) -> None:
        super().__init__()
        self.url = backend.url


_NGINX_CONF = """\
daemon off;
master_process off;
worker_rlimit_nofile 20000;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 2m;
    keepalive_requests 1000000;
    upstream backend {{
        server {backend};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


class Nginx(Setup):
    """nginx as a streaming reverse proxy: one process (master_process off), proxy_buffering off."""

    name, label = "nginx", "nginx"

    def __init__(self, backend: Backend, log_dir: Path) -> None:
        super().__init__()
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise Skipped("nginx is not installed (Debian: apt-get install -y nginx-light)")
        conf_dir = log_dir / "nginx"
        conf_dir.mkdir(exist_ok=True)
        port = free_port()
        conf = conf_dir / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(dir=conf_dir, port=port, backend=backend.url.split("://", 1)[1])
        )
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
        self.info = {"version": version, "config": str(conf)}
        child = Child(
            "nginx",
            [binary, "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "error.log")],
            log_dir,
        )
        self.front = [child]
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http("GET", self.url + "/health"), 10, "waiting for nginx", child)


def litellm_binary(install: bool) -> Path:
    for candidate in (
        os.environ.get("BENCH_LITELLM"),
        LITELLM_VENV / "bin" / "litellm",
        VENV_BIN / "litellm",
    ):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    if not install:
        raise Skipped(
            f"LiteLLM is not installed: python3 -m venv {LITELLM_VENV} && "
            f"{LITELLM_VENV}/bin/pip install '{LITELLM_PIN}'"
        )
    print(
        f"installing {LITELLM_PIN} into {LITELLM_VENV} "
        "(once; a separate venv, see docs/benchmarks.md)",
        flush=True,
    )
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    done = subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise Skipped(f"pip install '{LITELLM_PIN}' failed: {done.stderr.strip()[-300:]}")
    return LITELLM_VENV / "bin" / "litellm"


_LITELLM_CONF = """\
model_list:
  - model_name: m
    litellm_params:
      model: openai/m
      api_base: {backend}/v1
      api_key: sk-bench-backend
litellm_settings:
  drop_params: true
  telemetry: false
"""


class LiteLLM(Setup):
    name, label = "litellm", "LiteLLM"

    def __init__(self, backend: Backend, log_dir: Path, *, install: bool = True) -> None:
        super().__init__()
        binary = litellm_binary(install)
        conf = log_dir / "litellm.yaml"
        conf.write_text(_LITELLM_CONF.format(backend=backend.url))
        port = free_port()
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map at start
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_MASTER_KEY": API_KEY,
            "NO_PROXY": "*",
            "no_proxy": "*",
        }
        version = subprocess.run(
            [
                str(binary.parent / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.info = {"version": version, "binary": str(binary)}
        child = Child(
            "litellm",
            [
                str(binary),
                "--config",
                str(conf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            log_dir,
            env=env,
        )
        self.front = [child]
        self.url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        wait_until(
            lambda: http("GET", self.url + "/health/liveliness"),
            180,
            "waiting for LiteLLM to start",
            child,
        )
        self.info["startup_s"] = round(time.monotonic() - started, 1)


def _agent_run(proxy_url: str, backend_url: str, max_concurrency: int) -> list[str]:
    """``agent run``'s arguments for a bench agent serving model ``m``."""
    return [
        "run",
        "--proxy-url",
        proxy_url,
        "--backend-url",
        backend_url,
        "--worker-secret",
        SECRET,
        "--models",
        "m",
        "--max-concurrency",
        str(max_concurrency),
        "--log-level",
        "warning",
    ]


class Relay(Setup):
    def __init__(
        self,
        backend: Backend,
        log_dir: Path,
        agents: int,
        max_concurrency: int = 64,
        suffix: str = "",
        cprofile_dir: Path | None = None,
        http_front: str | None = None,
        tree: Path | None = None,
        console: bool = False,
    ) -> None:
        super().__init__()
        # `tree`: run the relay and agent of another checkout (the --baseline
        # run) on this venv's dependencies: `python -m` from that tree's root.
        env = {"PYTHONPATH": str(tree)} if tree is not None else {}
        cwd = str(tree) if tree is not None else None

        def command(entry: str, prof: str) -> list[str]:
            if tree is not None:
                return [sys.executable, "-m", entry]
            if cprofile_dir is None:
                return [str(VENV_BIN / entry)]
            return [
                sys.executable,
                str(HERE / "cprofile_wrap.py"),
                str(cprofile_dir / f"{prof}.prof"),
                entry,
            ]

        self.name = f"relay{agents}{suffix}"
        self.label = f"relay + {agents} agent{'s' if agents > 1 else ''}"
        if http_front != "builtin":
            self.label += f", {http_front} front"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        relay = Child(
            f"{self.name}-relay",
            [
                *command("relay", "relay"),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--worker-secret",
                SECRET,
                "--log-level",
                "warning",
                *(["--http-front", http_front] if http_front else []),
                *(["--admin-token", CONSOLE_TOKEN] if console else []),
            ],
            log_dir,
            env={"WORKER_SECRET": "", "LOG_LEVEL": "", "HTTP_FRONT": "", **env},
            cwd=cwd,
        )
        self.front = [relay]
        wait_until(lambda: http("GET", self.url + "/health"), 30, "waiting for the relay", relay)
        for k in range(agents):
            self.agents.append(
                Child(
                    f"{self.name}-agent{k}",
                    [
                        *command("agent", f"agent{k}"),
                        *_agent_run(self.url, f"{backend.url}/t/a{k}", max_concurrency),
                    ],
                    log_dir,
                    env=env,
                    cwd=cwd,
                )
            )

        def ready() -> bool:
            health = http("GET", self.url + "/health")
            models = http("GET", self.url + "/v1/models")
            return health["workers_connected"] == agents and any(
                m["id"] == "m" for m in models["data"]
            )

        wait_until(ready, 30, f"waiting for {agents} agent(s) to register", relay)
        self.info = {"agents": agents, "max_concurrency": max_concurrency}
        if http_front:
            self.info["http_front"] = http_front
        if console:
            self.info["console"] = "a logged-in dashboard's live stream held open"
            self.console_events = ConsoleWatcher(self.url)
        if tree is not None:
            self.info["tree"] = str(tree)


_HAPROXY_CONF = """\
global
    maxconn 20000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 30s
    retries 3
    option redispatch 1
    retry-on 503 conn-failure empty-response junk-response
frontend clients
    bind 127.0.0.1:{port}
    default_backend relays
backend relays
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    default-server inter 1s fall 1 rise 2
    http-reuse always
{servers}
"""


class Fleet(Setup):
    """Two relays behind one HAProxy (one thread, like nginx's one worker), and
    two agents each serving both relays with one budget (`--proxy-url a,b`).

    The relays are the "front" (their CPU per request is comparable with one
    relay's); HAProxy's CPU is its own role, "balancer".
    """

    name, label = "relay2x", "2 relays + 2 agents on both, HAProxy"

    def __init__(self, backend: Backend, log_dir: Path, max_concurrency: int = 64) -> None:
        super().__init__()
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(binary):
            raise Skipped("haproxy is not installed (Debian: apt-get install -y haproxy)")
        self.balancer: list[Child] = []
        relay_urls = []
        for i in range(2):
            port = free_port()
            relay_urls.append(f"http://127.0.0.1:{port}")
            relay = Child(
                f"{self.name}-relay{i}",
                [
                    str(VENV_BIN / "relay"),
                    "serve",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--worker-secret",
                    SECRET,
                    "--log-level",
                    "warning",
                ],
                log_dir,
                env={"WORKER_SECRET": "", "LOG_LEVEL": ""},
            )
            self.front.append(relay)
            wait_until(
                lambda url=relay_urls[-1]: http("GET", url + "/health"),
                30,
                "waiting for a relay",
                relay,
            )
        for k in range(2):
            self.agents.append(
                Child(
                    f"{self.name}-agent{k}",
                    [
                        str(VENV_BIN / "agent"),
                        *_agent_run(",".join(relay_urls), f"{backend.url}/t/a{k}", max_concurrency),
                    ],
                    log_dir,
                )
            )

        def ready() -> bool:
            return all(http("GET", url + "/health")["workers_connected"] == 2 for url in relay_urls)

        wait_until(ready, 30, "waiting for the agents to register at both relays", self.front[0])
        port = free_port()
        conf_dir = log_dir / "haproxy"
        conf_dir.mkdir(exist_ok=True)
        conf = conf_dir / "haproxy.cfg"
        servers = "\n".join(
            f"    server relay{i} {url.removeprefix('http://')} check"
            for i, url in enumerate(relay_urls)
        )
        conf.write_text(_HAPROXY_CONF.format(port=port, servers=servers))
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout
        self.balancer = [Child(f"{self.name}-haproxy", [binary, "-db", "-f", str(conf)], log_dir)]
        self.url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http("GET", self.url + "/health"), 10, "waiting for HAProxy", self.balancer[0]
        )
        self.info = {
            "relays": 2,
            "agents": 2,
            "max_concurrency": max_concurrency,
            "haproxy": version.splitlines()[0] if version else "",
        }

    def children(self) -> list[Child]:
        return [*self.balancer, *self.front, *self.agents]


def start(
    name: str,
    backend: Backend,
    log_dir: Path,
    *,
    install_litellm: bool = True,
    baseline: Path | None = None,
) -> Setup:
    if name == "direct":
        return Direct(backend, log_dir)
    if name == "nginx":
        return Nginx(backend, log_dir)
    if name == "litellm":
        return LiteLLM(backend, log_dir, install=install_litellm)
    if name == "relay1":
        return Relay(backend, log_dir, 1)
    if name == "relay4":
        return Relay(backend, log_dir, 4)
    if name == "relay1h":  # the same relay with every connection on Hypercorn
        return Relay(backend, log_dir, 1, http_front="hypercorn", suffix="h")
    if name == "relay1c":  # the same, with a logged-in web console open throughout
        return Relay(backend, log_dir, 1, suffix="c", console=True)
    if name == "relay1base":
        if baseline is None:
            raise Skipped("no --baseline REF given")
        return Relay(backend, log_dir, 1, suffix="base", tree=baseline)
    if name == "relay2x":
        return Fleet(backend, log_dir)
    if name == "relay1w":
        return Relay(backend, log_dir, 1, max_concurrency=2100, suffix="w")
    raise ValueError(name)
