"""A real system tray: the app under Xvfb with Debian's ``trayer``, read back as pixels.

PySide6's offscreen platform reports no tray, so this test runs the app as
a person's session would: ``agent desktop --config FILE`` (unattended, the
secret from WORKER_SECRET) on an X display with a tray host. The icon must
appear, change colour with the agent's state, and go away on SIGTERM,
which quits as the menu's Quit does (drain first).
"""

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.desktop.conftest import SECRET, WAIT, ChatRequest, Child, need
from tests.agent.desktop.xdisplay import Display, missing_tools, open_display

need("PySide6", "the desktop GUI")
need("keyring", "the OS keyring client")
need("platformdirs", "the platform config directory")

from agent.desktop.app import STATE_COLORS  # noqa: E402
from agent.desktop.settings import AgentSettings, save_agent_file  # noqa: E402
from agent.desktop.state import TrayKind  # noqa: E402

_MISSING = missing_tools()
if _MISSING:
    _MESSAGE = f"{', '.join(_MISSING)} not installed (apt-get install xvfb trayer): no real tray"
    if os.environ.get("CI") == "true":
        pytest.fail(_MESSAGE, pytrace=False)
    pytest.skip(_MESSAGE, allow_module_level=True)

# The icon is ~22 px across: a few hundred pixels of its colour (the STACK-NOTES probe saw ~250).
_ICON_PIXELS = 60


def _pixels(display: Display, kind: TrayKind) -> int:
    return display.screen().count_near(STATE_COLORS[kind], tolerance=30)


def _until(check: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    """Re-read the framebuffer until `check` holds: the X server paints on its own time."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_real_tray_icon_follows_the_agent(tmp_path: Path, relay, backend_url) -> None:
    _relay, relay_url = relay
    config = tmp_path / "agent.toml"
    save_agent_file(config, AgentSettings(proxy_url=relay_url, backend_url=backend_url))
    fbdir = tmp_path / "fb"
    fbdir.mkdir()
    with open_display(fbdir) as display:
        _until(lambda: display.screen().count_near("#dcdad5", 5) > 1000, "the tray host")
        for kind in (TrayKind.CONNECTED, TrayKind.RELAYING):
            assert _pixels(display, kind) < 5
        app = Child(
            ["-m", "agent", "desktop", "--config", str(config), "--log-format", "json"],
            env={
                "DISPLAY": display.name,
                "QT_QPA_PLATFORM": "xcb",
                "WORKER_SECRET": SECRET,
                "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                "PYTHON_KEYRING_BACKEND": "tests.agent.desktop.file_keyring.FileKeyring",
                "MODELRELAY_TEST_KEYRING": str(tmp_path / "keyring.json"),
            },
        )
        try:
            app.wait_for(lambda line: line.get("event") == "tray: connected")
            assert not any("no system tray" in str(line.get("event")) for line in app.lines)
            _until(lambda: _pixels(display, TrayKind.CONNECTED) >= _ICON_PIXELS, "a green icon")
            request = ChatRequest(relay_url, {"chunks": 6, "delay": 0.3})
            request.start()
            app.wait_for(lambda line: line.get("event") == "tray: relaying")
            _until(lambda: _pixels(display, TrayKind.RELAYING) >= _ICON_PIXELS, "a blue icon")
            assert _pixels(display, TrayKind.CONNECTED) < _ICON_PIXELS
            # SIGTERM quits as Quit does: the request in flight finishes first.
            app.process.send_signal(signal.SIGTERM)
            assert app.process.wait(WAIT) == 0
            request.join(10)
            assert request.status == 200
            assert b"data: [DONE]" in request.body
            events = [line.get("event") for line in app.lines]
            assert "quit: draining before exit" in events
            assert "drained: every in-flight request finished" in events
            _until(
                lambda: (
                    _pixels(display, TrayKind.RELAYING) + _pixels(display, TrayKind.CONNECTED) < 5
                ),
                "the icon to go away",
            )
        finally:
            app.stop()
    assert shutil.which("trayer")
