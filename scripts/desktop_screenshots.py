#!/usr/bin/env python3
"""Screenshots of ModelRelay Desktop for the docs, taken on a real X display.

Starts Xvfb with a tray host (trayer), a relay and the fake backend, drives
the app as a person would, and writes PNGs to docs/images/:
the wizard's backend and relay pages, Settings, the tray menu while a
request is relayed, and the log window. Needs the [desktop] extra and
``apt-get install xvfb trayer``. Run from the repository root::

    .venv/bin/python scripts/desktop_screenshots.py
"""

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.agent.desktop.conftest import SECRET, ChatRequest, Child, start_relay  # noqa: E402
from tests.agent.desktop.xdisplay import open_display  # noqa: E402

OUT = ROOT / "docs" / "images"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "fb").mkdir()
        with open_display(tmp / "fb", size="1000x700") as display:
            os.environ["DISPLAY"] = display.name
            os.environ["QT_QPA_PLATFORM"] = "xcb"
            os.environ["XDG_CONFIG_HOME"] = str(tmp / "xdg")
            relay, relay_url = start_relay()
            backend = Child(["-m", "tests.fake_backend", "--models", "llama3.1:8b,qwen2.5:7b"])
            try:
                shoot(tmp, relay_url, backend.wait_stdout("FAKE_BACKEND_URL="))
            finally:
                backend.stop()
                relay.stop()


def shoot(tmp: Path, relay_url: str, backend_url: str) -> None:
    import keyring
    from PySide6.QtCore import QEventLoop, QPoint
    from PySide6.QtWidgets import QApplication

    from agent.desktop.app import DesktopApp, Paths
    from agent.desktop.autostart import target_for
    from agent.desktop.state import TrayKind
    from agent.logging import configure_logging
    from tests.agent.desktop.file_keyring import FileKeyring

    configure_logging("info", "text")  # as `agent desktop` does: quiet httpx
    keyring.set_keyring(FileKeyring(tmp / "keyring.json"))
    qapp = QApplication([])
    qapp.setQuitOnLastWindowClosed(False)

    def wait(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)

    def settle() -> None:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)

    def save(widget: object, name: str) -> None:
        settle()
        pixmap = widget.grab()  # type: ignore[attr-defined]
        pixmap.save(str(OUT / name))
        print(f"wrote docs/images/{name}")

    app = DesktopApp(
        qapp,
        Paths(tmp / "config", tmp / "config" / "agent.toml"),
        candidates=(("Ollama", "http://127.0.0.1:9"), ("vLLM", backend_url)),
        autostart=target_for("linux", home=tmp / "home"),
        exit_app=lambda: None,
    )
    app.start()
    wizard = app.wizard
    assert wizard is not None
    wizard.resize(640, 470)
    wait(lambda: wizard.backend.models is not None, "the backend")
    save(wizard, "desktop-wizard-backend.png")
    wizard.next()
    wizard.relay.url.setText(relay_url)
    wizard.relay.secret.setText(SECRET)
    wizard.relay.test()
    wait(lambda: wizard.relay.ok, "the relay test")
    save(wizard, "desktop-wizard-relay.png")
    wizard.next()
    wizard.worker.name.setText("studio-4090")
    wizard.worker.concurrency.setValue(2)
    save(wizard, "desktop-wizard-worker.png")
    wizard.accept()
    wait(lambda: app.state.kind is TrayKind.CONNECTED, "connected")

    request = ChatRequest(relay_url, {"chunks": 40, "delay": 0.25}, model="llama3.1:8b")
    request.start()
    wait(lambda: app.state.kind is TrayKind.RELAYING, "relaying")
    geometry = app.tray.geometry()
    app.menu.popup(QPoint(geometry.right() - 260, geometry.bottom() + 2))
    settle()
    screen = qapp.primaryScreen()
    menu = app.menu.geometry()
    left = min(menu.left(), geometry.left()) - 10
    shot = screen.grabWindow(0, left, 0, 1000 - left, menu.bottom() + 12)
    shot.save(str(OUT / "desktop-tray-menu.png"))
    print("wrote docs/images/desktop-tray-menu.png")
    app.menu.hide()

    app.open_settings()
    assert app.settings_dialog is not None
    save(app.settings_dialog, "desktop-settings.png")
    app.settings_dialog.close()
    app.open_logs()
    assert app.log_window is not None
    save(app.log_window, "desktop-logs.png")

    app.runner.quit()  # type: ignore[union-attr]
    app.runner.join(40)  # type: ignore[union-attr]
    request.join(30)
    app.close()


if __name__ == "__main__":
    main()
