"""The tray app's GUI under ``QT_QPA_PLATFORM=offscreen``, against a real relay and backend.

Widgets are driven as a person would (fields typed, buttons clicked); every
wait is for a condition (`qtbot.waitUntil`), never for a fixed time.
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent.desktop.conftest import SECRET, ChatRequest, Child, need, start_relay

need("PySide6", "the desktop GUI")
need("keyring", "the OS keyring client")
need("platformdirs", "the platform config directory")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication, QWizard  # noqa: E402

from agent.desktop.app import DesktopApp, Paths  # noqa: E402
from agent.desktop.autostart import target_for  # noqa: E402
from agent.desktop.settings import AgentSettings, load_agent_file, save_agent_file  # noqa: E402
from agent.desktop.state import TrayKind  # noqa: E402

WAIT_MS = 30_000


class Harness:
    """Builds `DesktopApp`s for one test and makes sure their agent threads end."""

    def __init__(self, qapp: QApplication, tmp_path: Path) -> None:
        self.qapp = qapp
        self.tmp_path = tmp_path
        self.apps: list[DesktopApp] = []
        self.exits: list[DesktopApp] = []

    def make(
        self, *, env_secret: str | None = None, candidates: tuple[tuple[str, str], ...] = ()
    ) -> DesktopApp:
        paths = Paths(self.tmp_path / "config", self.tmp_path / "config" / "agent.toml")
        app: DesktopApp

        def exit_app() -> None:
            self.exits.append(app)

        app = DesktopApp(
            self.qapp,
            paths,
            env_secret=env_secret,
            candidates=candidates,
            autostart=target_for("linux", home=self.tmp_path / "home"),
            debounce_secs=0.5,
            exit_app=exit_app,
        )
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in self.apps:
            if app.runner is not None:
                app.runner.quit()
                assert app.runner.join(40), "the agent thread did not end"
            for window in (app.wizard, app.settings_dialog, app.log_window, app.update_box):
                if window is not None:
                    window.close()
            app.close()


@pytest.fixture
def harness(qapp: QApplication, tmp_path: Path, file_keyring: Path) -> Iterator[Harness]:
    h = Harness(qapp, tmp_path)
    try:
        yield h
    finally:
        h.close()


def _write_settings(path: Path, relay_url: str, backend_url: str, **kw: object) -> None:
    save_agent_file(path, AgentSettings(proxy_url=relay_url, backend_url=backend_url, **kw))  # type: ignore[arg-type]


def _kind(app: DesktopApp, kind: TrayKind) -> Callable[[], bool]:
    return lambda: app.state.kind is kind


def test_wizard_completes_against_a_real_relay(
    qtbot, harness: Harness, relay, backend_url, file_keyring: Path
) -> None:
    relay_proc, relay_url = relay
    app = harness.make(candidates=(("Nothing here", "http://127.0.0.1:9"), ("vLLM", backend_url)))
    app.start()
    wizard = app.wizard
    assert wizard is not None
    qtbot.addWidget(wizard)
    # Page 1: the fake backend is detected and its models listed.
    qtbot.waitUntil(lambda: wizard.backend.models == ("m1", "m2"), timeout=WAIT_MS)
    assert wizard.backend.url.text() == backend_url
    assert wizard.backend.found.count() == 1
    wizard.next()
    # Page 2: a wrong secret is refused with a clear message and blocks Next.
    next_button = wizard.button(QWizard.WizardButton.NextButton)
    qtbot.keyClicks(wizard.relay.url, relay_url)
    qtbot.keyClicks(wizard.relay.secret, "wrong-secret")
    qtbot.mouseClick(wizard.relay.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.relay.result is not None, timeout=WAIT_MS)
    assert "Wrong secret" in wizard.relay.status.text()
    assert not next_button.isEnabled()
    wizard.relay.secret.clear()
    qtbot.keyClicks(wizard.relay.secret, SECRET)
    qtbot.mouseClick(wizard.relay.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.relay.ok, timeout=WAIT_MS)
    assert next_button.isEnabled()
    wizard.next()
    # Page 3: only m2, two at once, a name.
    worker = wizard.worker
    qtbot.keyClicks(worker.name, "desk-test")
    worker.some_models.setChecked(True)
    worker.model_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    worker.concurrency.setValue(2)
    wizard.button(QWizard.WizardButton.FinishButton).click()
    assert wizard.result() == QWizard.DialogCode.Accepted, wizard.error.text()
    # Saved: the secret in the keyring, never in the TOML file.
    text = app.paths.agent_file.read_text()
    assert SECRET not in text
    assert SECRET in file_keyring.read_text()
    assert load_agent_file(app.paths.agent_file) == AgentSettings(
        proxy_url=relay_url,
        backend_url=backend_url,
        worker_name="desk-test",
        models=("m2",),
        max_concurrency=2,
    )
    # And the agent runs with it: the relay routes m2 to this worker.
    qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
    relay_proc.wait_for(
        lambda line: (
            line.get("event") == "worker registered" and line.get("worker_name") == "desk-test"
        )
    )
    models = httpx.get(f"{relay_url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["m2"]
    assert "Worker: desk-test" in app.tray.toolTip()


def test_tray_follows_connect_relaying_loss_and_recovery(
    qtbot, harness: Harness, backend_url
) -> None:
    relay_proc, relay_url = start_relay()
    try:
        _write_settings(
            harness.tmp_path / "config" / "agent.toml", relay_url, backend_url, max_concurrency=2
        )
        app = harness.make(env_secret=SECRET)
        app.start()
        qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: app.state.models == ("m1", "m2"), timeout=WAIT_MS)  # live list
        request = ChatRequest(relay_url, {"stall": True})
        request.start()
        qtbot.waitUntil(_kind(app, TrayKind.RELAYING), timeout=WAIT_MS)
        assert app.state.in_flight == 1
        assert "Load: 1/2" in app.tray.toolTip()
        port = relay_url.rsplit(":", 1)[1]
        relay_proc.process.kill()
        relay_proc.process.wait(10)
        relay_proc.stop()
        qtbot.waitUntil(_kind(app, TrayKind.ERROR), timeout=WAIT_MS)
        assert "Cannot reach the relay" in app.state.message
        qtbot.waitUntil(
            lambda: any(n.title == "ModelRelay: connection lost" for n in app.notifications),
            timeout=WAIT_MS,
        )
        request.join(10)
        relay_proc, relay_url = start_relay(f"127.0.0.1:{port}")  # the same address comes back
        qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
        qtbot.waitUntil(
            lambda: any(n.title == "ModelRelay: back online" for n in app.notifications),
            timeout=WAIT_MS,
        )
    finally:
        relay_proc.stop()


def test_quit_drains_an_in_flight_request(qtbot, harness: Harness, relay, backend_url) -> None:
    relay_proc, relay_url = relay
    _write_settings(harness.tmp_path / "config" / "agent.toml", relay_url, backend_url)
    app = harness.make(env_secret=SECRET)
    app.start()
    qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
    request = ChatRequest(relay_url, {"chunks": 8, "delay": 0.25})
    request.start()
    qtbot.waitUntil(_kind(app, TrayKind.RELAYING), timeout=WAIT_MS)
    app.quit_action.trigger()
    qtbot.waitUntil(lambda: app in harness.exits, timeout=WAIT_MS)
    assert app.runner is not None
    assert not app.runner.alive
    request.join(10)
    assert request.error is None
    assert request.status == 200
    assert b"data: [DONE]" in request.body  # the whole stream, not cut by the quit
    relay_proc.wait_for(
        lambda line: line.get("event") == "worker disconnected" or "drain" in str(line.get("event"))
    )


def test_pause_resume_settings_logs_and_updates(
    qtbot, harness: Harness, relay, backend_url, tmp_path: Path
) -> None:
    relay_proc, relay_url = relay
    _write_settings(harness.tmp_path / "config" / "agent.toml", relay_url, backend_url)
    app = harness.make(env_secret=SECRET)
    app.start()
    qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
    assert app.console_url() == f"{relay_url}/console"
    # Pause: drain, then stay disconnected; Resume connects again.
    app.pause_action.trigger()
    qtbot.waitUntil(_kind(app, TrayKind.PAUSED), timeout=WAIT_MS)
    assert app.pause_action.text() == "Resume"
    app.pause_action.trigger()
    qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
    # Settings: concurrency and start on login; the agent restarts with them.
    app.settings_action.trigger()
    dialog = app.settings_dialog
    assert dialog is not None
    qtbot.addWidget(dialog)
    dialog.worker.concurrency.setValue(3)
    dialog.start_on_login.setChecked(True)
    dialog.save_button.click()
    assert dialog.error.text() == ""
    assert app.config is not None
    assert app.config.max_concurrency == 3
    desktop_file = harness.tmp_path / "home/.config/autostart/modelrelay-desktop.desktop"
    assert desktop_file.exists()
    assert "max-concurrency = 3" in app.paths.agent_file.read_text()
    assert SECRET not in app.paths.agent_file.read_text()
    relay_proc.wait_for(
        lambda line: line.get("event") == "worker registered" and line.get("max_concurrent") == 3
    )
    qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
    # A wrong secret in Settings is tested and not saved.
    app.settings_action.trigger()
    dialog = app.settings_dialog
    qtbot.addWidget(dialog)
    dialog.relay.secret.setText("wrong")
    dialog.save_button.click()
    qtbot.waitUntil(lambda: "Not saved" in dialog.error.text(), timeout=WAIT_MS)
    assert "Wrong secret" in dialog.error.text()
    dialog.start_on_login.setChecked(False)
    dialog.relay.secret.setText(SECRET)
    dialog.save_button.click()
    qtbot.waitUntil(lambda: not desktop_file.exists(), timeout=WAIT_MS)
    # Logs: recent lines, and diagnostics without the secret.
    app.logs_action.trigger()
    window = app.log_window
    assert window is not None
    qtbot.addWidget(window)
    assert "registered" in window.view.toPlainText()
    window.copy_diagnostics()
    diagnostics = QApplication.clipboard().text()
    assert "ModelRelay Desktop diagnostics" in diagnostics
    assert "worker_secret: (set, not shown)" in diagnostics
    assert SECRET not in diagnostics
    # Updates: a configured feed (a local file server stands in for the index).
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "json").write_text(json.dumps({"info": {"version": "99.0"}}))
    server = Child(["-m", "http.server", "--bind", "127.0.0.1", "--directory", str(feed), "0"])
    try:
        port = server.wait_stdout("Serving HTTP on 127.0.0.1 port ").split()[0]
        app.prefs = app.prefs.__class__(update_url=f"http://127.0.0.1:{port}/json")
        app.update_action.trigger()
        qtbot.waitUntil(lambda: app.update_box is not None, timeout=WAIT_MS)
        assert "ModelRelay 99.0 is out" in app.update_box.text()
        assert "pip install --upgrade" in app.update_box.text()
    finally:
        server.stop()


def test_qt_keeps_none_alive(qapp: QApplication) -> None:
    """The pinned PySide6 does not drop references to None (6.12.0 on Python 3.11 does,
    once per call of a method returning nothing, until the interpreter aborts)."""
    import sys

    from PySide6.QtWidgets import QLabel

    label = QLabel()
    before = sys.getrefcount(None)
    for _ in range(1000):
        label.setText("x")
        qapp.processEvents()
    assert sys.getrefcount(None) > before - 100


def test_quit_is_bounded_when_a_request_never_ends(
    qtbot, harness: Harness, relay, backend_url
) -> None:
    _relay_proc, relay_url = relay
    _write_settings(
        harness.tmp_path / "config" / "agent.toml",
        relay_url,
        backend_url,
        other={"drain_timeout": 0.5},
    )
    app = harness.make(env_secret=SECRET)
    app.start()
    qtbot.waitUntil(_kind(app, TrayKind.CONNECTED), timeout=WAIT_MS)
    request = ChatRequest(relay_url, {"stall": True})
    request.start()
    qtbot.waitUntil(_kind(app, TrayKind.RELAYING), timeout=WAIT_MS)
    app.quit()
    # The drain deadline (0.5 s) abandons the stalled request; the app exits anyway.
    qtbot.waitUntil(lambda: app in harness.exits, timeout=WAIT_MS)
    assert any("abandoned" in line for line in app.logs.problems)
    assert request.is_alive()  # the app did not wait for it (the relay requeues it)
