"""The update check against a local package index (a real HTTP server on 127.0.0.1)."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.desktop.updates import (
    UpdateError,
    check_for_update,
    install_method,
    parse_index,
    upgrade_command,
)

INDEX = {
    "info": {
        "name": "modelrelay-server",
        "version": "0.3.0",
        "project_urls": {"Changelog": "https://example.org/changes"},
    },
    "releases": {
        "0.1.0": [{"yanked": False}],
        "0.2.0": [{"yanked": False}],
        "0.2.1": [{"yanked": True}],
        "0.3.0": [{"yanked": False}],
        "0.4.0rc1": [{"yanked": False}],
    },
    "changes": {"0.3.0": "The tray shows the load."},
}


@pytest.fixture
def index_url() -> Iterator[str]:
    """A package index JSON API on an ephemeral port; /broken answers garbage, /gone 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/pypi/modelrelay-server/json":
                body, status = json.dumps(INDEX).encode(), 200
            elif self.path == "/broken":
                body, status = b"<html>", 200
            else:
                body, status = b"not found", 404
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_newer_release_with_what_changed_and_the_command(index_url: str) -> None:
    info = check_for_update(
        f"{index_url}/pypi/modelrelay-server/json", installed="0.1.0", method="pipx"
    )
    assert info.available
    assert info.latest == "0.3.0"
    assert info.newer == ("0.3.0", "0.2.0")  # no yanked release, no pre-release
    summary = info.summary()
    assert "0.3.0 is out (you have 0.1.0)" in summary
    assert "The tray shows the load." in summary
    assert "https://example.org/changes" in summary
    assert "pipx upgrade modelrelay" in summary


def test_up_to_date(index_url: str) -> None:
    info = check_for_update(
        f"{index_url}/pypi/modelrelay-server/json", installed="0.3.0", method="pip"
    )
    assert not info.available
    assert info.summary() == "ModelRelay 0.3.0 is the newest release."


def test_index_errors_are_clear(index_url: str) -> None:
    with pytest.raises(UpdateError, match="answered 404"):
        check_for_update(f"{index_url}/gone", installed="0.1.0")
    with pytest.raises(UpdateError, match="not package JSON"):
        check_for_update(f"{index_url}/broken", installed="0.1.0")


def test_unreachable_index() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UpdateError, match="cannot reach"):
        check_for_update(f"http://127.0.0.1:{port}/json", installed="0.1.0", timeout_secs=2)


def test_install_method_and_commands() -> None:
    assert install_method("/home/u/.local/share/pipx/venvs/modelrelay") == "pipx"
    assert install_method("/home/u/.local/share/uv/tools/modelrelay") == "uv"
    assert install_method("/home/u/venv") == "pip"
    assert upgrade_command("uv") == "uv tool upgrade modelrelay"
    assert "pip install --upgrade 'modelrelay-server[desktop]'" in upgrade_command("pip")


def test_a_source_tree_version_counts_as_oldest() -> None:
    body = json.dumps({"info": {"version": "0.1.0"}}).encode()
    assert parse_index(body, "0+unknown", "pip").newer == ("0.1.0",)
