"""The container recipes in contrib/docker: compose schema, networking, healthcheck, images.

The images are built and run only where a container engine answers (`docker
info`); elsewhere that test skips and says why. Everything else runs on any
machine: the compose file is checked against the Compose specification's JSON
schema (from Debian's docker-compose package), and the relay image's
healthcheck command is run for real against a relay on an ephemeral port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trio
import yaml

from tests.integration.procs import relay_process
from tests.syspkg import require_tool

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "contrib" / "docker"
SPEC_PATHS = [
    Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json"),
]


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _spec() -> dict[str, Any]:
    require_tool("docker-compose", "docker-compose")  # ships the specification's schema
    for path in SPEC_PATHS:
        if path.exists():
            return json.loads(path.read_text())
    pytest.fail(f"docker-compose is installed but none of {SPEC_PATHS} exists")


def test_compose_file_follows_the_compose_specification() -> None:
    schema = _spec()
    # Debian's copy (compose 1.29) predates the top-level `name`, which the
    # current specification has (a string: the project name).
    schema["properties"].setdefault("name", {"type": "string"})
    # Its $schema URL is spelled in a form jsonschema does not look up: say the draft.
    jsonschema.Draft201909Validator(schema).validate(_compose())


def test_agent_reaches_the_hosts_loopback() -> None:
    services = _compose()["services"]
    agent, relay = services["agent"], services["relay"]
    # Host networking: 127.0.0.1 in the agent is the host's loopback, where
    # llama-server/Ollama/LM Studio listen by default.
    assert agent["network_mode"] == "host"
    assert "extra_hosts" not in agent  # not allowed together with host networking
    assert agent["environment"]["BACKEND_URL"].endswith("http://127.0.0.1:8000}")
    # ... and the relay at the port it publishes on the host's loopback.
    published = relay["ports"][0]
    assert published == "127.0.0.1:${RELAY_PORT:-8080}:${RELAY_PORT:-8080}"
    assert agent["environment"]["PROXY_URL"] == "http://127.0.0.1:${RELAY_PORT:-8080}"
    assert relay["environment"]["LISTEN_ADDR"] == "0.0.0.0:${RELAY_PORT:-8080}"
    doc = (DOCKER / "compose.yaml").read_text()
    assert "host-gateway" in doc  # the documented alternative recipe


def _healthcheck_argv() -> list[str]:
    text = (DOCKER / "Dockerfile.relay").read_text()
    match = re.search(r"^HEALTHCHECK [^\n]*\\\n\s+CMD (\[.*\])$", text, re.M)
    assert match, "Dockerfile.relay has no exec-form HEALTHCHECK"
    argv = json.loads(match[1])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def test_healthcheck_follows_the_configured_port() -> None:
    argv = _healthcheck_argv()
    async with relay_process() as (_relay, url):
        port = url.rsplit(":", 1)[1]
        env = {**os.environ, "LISTEN_ADDR": f"0.0.0.0:{port}"}
        healthy = await trio.run_process(argv, env=env, check=False, capture_stderr=True)
        assert healthy.returncode == 0, healthy.stderr
        # Another port (nothing listens on port 9 here): unhealthy.
        env["LISTEN_ADDR"] = "0.0.0.0:9"
        unhealthy = await trio.run_process(argv, env=env, check=False, capture_stderr=True)
        assert unhealthy.returncode != 0


def _engine() -> str:
    for name in ("docker", "podman"):
        found = shutil.which(name)
        if found and subprocess.run([found, "info"], capture_output=True).returncode == 0:
            return found
    pytest.skip(
        "CONTAINER TEST SKIPPED: no container engine answers here (`docker info` / "
        "`podman info` fail): the images are built and run where one does"
    )


def test_images_build_and_the_relay_runs_healthy() -> None:
    engine = _engine()
    tag = f"modelrelay-test-{uuid.uuid4().hex[:8]}"
    for name in ("relay", "agent"):
        subprocess.run(
            [
                engine,
                "build",
                "-q",
                "-f",
                str(DOCKER / f"Dockerfile.{name}"),
                "-t",
                f"{tag}-{name}",
                str(ROOT),
            ],
            check=True,
            capture_output=True,
            timeout=1800,
        )
    version = subprocess.run(
        [engine, "run", "--rm", f"{tag}-agent", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert version.stdout.startswith("agent ")
    container = subprocess.run(
        [
            engine,
            "run",
            "-d",
            "--rm",
            "-e",
            "WORKER_SECRET=s",
            "-e",
            "LISTEN_ADDR=0.0.0.0:8181",
            "--health-interval",
            "1s",
            f"{tag}-relay",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    try:
        status = ""
        deadline = time.monotonic() + 120
        while status not in ("healthy", "unhealthy") and time.monotonic() < deadline:
            time.sleep(1)  # the engine's own health state, checked once a second
            status = subprocess.run(
                [engine, "inspect", "-f", "{{.State.Health.Status}}", container],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        assert status == "healthy"
    finally:
        subprocess.run([engine, "rm", "-f", container], capture_output=True, timeout=60)
        for name in ("relay", "agent"):
            subprocess.run([engine, "rmi", "-f", f"{tag}-{name}"], capture_output=True, timeout=60)
