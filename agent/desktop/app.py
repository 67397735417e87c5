"""ModelRelay Desktop: the tray icon, its menu and windows, around the agent thread.

`DesktopApp` owns the tray icon, the `TrayModel` (agent/desktop/state.py),
the `AgentRunner` (agent/desktop/runner.py) and the windows: the first-run
wizard, Settings, the log window. The agent's events arrive through a Qt
signal (queued from the agent thread); widgets are touched on the GUI
thread only. `run_desktop` is the program: it builds the application,
starts straight into the tray when the settings are complete (or when
given ``--config FILE``), and otherwise opens the wizard. SIGTERM and SIGINT
reach Qt's loop through a wake-up socket and quit as the Quit entry does.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

import attrs
from PySide6.QtCore import QObject, QSocketNotifier, Qt, QTimer, QUrl, Signal, SignalInstance
from PySide6.QtGui import QAction, QColor, QDesktopServices, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from agent.desktop.autostart import AutostartTarget, desktop_command, set_autostart, target_for
from agent.desktop.detect import KNOWN_BACKENDS, RelayCheck
from agent.desktop.diagnostics import diagnostics_text
from agent.desktop.forms import BackendForm, Mailbox, RelayForm, WorkerForm, in_background
from agent.desktop.runner import AgentRunner, Finished, LogBuffer, Paused, RunnerEvent, SignalInbox
from agent.desktop.settings import (
    AGENT_FILE,
    DESKTOP_FILE,
    AgentSettings,
    DesktopPrefs,
    SecretStore,
    SettingsError,
    check_agent_settings,
    default_config_dir,
    load_agent_file,
    load_prefs,
    save_agent_file,
    save_prefs,
)
from agent.desktop.state import Notification, TrayKind, TrayModel, TrayState
from agent.desktop.updates import UpdateInfo, check_for_update
from agent.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent.config import AgentConfig
    from agent.events import AgentEvent

__all__ = ["STATE_COLORS", "DesktopApp", "Paths", "run_desktop", "state_icon"]

log = logging.getLogger(__name__)

STATE_COLORS: dict[TrayKind, str] = {
    TrayKind.DISCONNECTED: "#8a8f98",
    TrayKind.CONNECTING: "#e3a008",
    TrayKind.CONNECTED: "#1f9d55",
    TrayKind.RELAYING: "#2563eb",
    TrayKind.ERROR: "#dc2626",
    TrayKind.PAUSED: "#6b21a8",
}
_LOG_LINES = 2000
_TICK_MS = 1000


def state_icon(state: TrayState, size: int = 64) -> QIcon:
    """The tray icon for `state`: a disc in the state's colour, with a mark or the count."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(STATE_COLORS[state.kind]))
    painter.drawEllipse(1, 1, size - 2, size - 2)
    painter.setPen(QColor("white"))
    font = QFont()
    font.setBold(True)
    font.setPixelSize(int(size * 0.5))
    painter.setFont(font)
    mark = {
        TrayKind.RELAYING: str(state.in_flight) if state.in_flight < 100 else "99+",
        TrayKind.ERROR: "!",
        TrayKind.CONNECTING: "…",
        TrayKind.PAUSED: "II",
    }.get(state.kind, "")
    if mark:
        painter.drawText(pixmap.rect(), Qt.AlignmentFlag.AlignCenter, mark)
    painter.end()
    return QIcon(pixmap)


@attrs.frozen
class Paths:
    """Where the app keeps its files.

    Attributes:
        config_dir: The platform config directory (``agent.toml``, ``desktop.toml``).
        agent_file: The ``agent run --config`` file in use (``--config`` or the default).
    """

    config_dir: Path
    agent_file: Path

    @classmethod
    def default(cls, config_file: Path | None = None) -> Paths:
        """The platform directory, and `config_file` when given."""
        directory = default_config_dir()
        return cls(directory, config_file or directory / AGENT_FILE)

    @property
    def prefs_file(self) -> Path:
        """``desktop.toml``."""
        return self.config_dir / DESKTOP_FILE


@attrs.frozen
class _LogLine:
    text: str


class SetupWizard(QWizard):
    """Owns the first run: backend, relay and secret (tested live), worker; then saves."""

    completed = Signal(object, str)  # AgentSettings, secret

    def __init__(
        self,
        paths: Paths,
        store: SecretStore,
        candidates: tuple[tuple[str, str], ...],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.paths = paths
        self.store = store
        self.setWindowTitle("ModelRelay Desktop: setup")
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage)
        self.backend = BackendForm(candidates)
        self.relay = RelayForm()
        self.worker = WorkerForm()
        self.error = QLabel()
        self.error.setObjectName("wizard_error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b91c1c")
        self.addPage(
            _Page(
                "Your LLM server",
                "ModelRelay serves the models of a server running on this computer.",
                self.backend,
                lambda: self.backend.models is not None,
                self.backend.models_listed,
            )
        )
        self.addPage(
            _Page(
                "The relay",
                "The relay's address and the worker secret its operator gave you.",
                self.relay,
                lambda: self.relay.ok,
                self.relay.checked,
            )
        )
        last = _Page("This worker", "How the relay lists this computer.", self.worker)
        last.body.addWidget(self.error)
        self.addPage(last)
        self.currentIdChanged.connect(self._entered)
        self.backend.detect()

    def _entered(self, page_id: int) -> None:
        if page_id == 2:
            self.worker.set_models(self.backend.models or ())

    def settings(self) -> AgentSettings:
        """The settings the pages hold."""
        return AgentSettings(
            proxy_url=self.relay.url.text().strip(),
            backend_url=self.backend.url.text().strip(),
            worker_name=self.worker.name.text().strip(),
            models=self.worker.chosen_models(),
            max_concurrency=self.worker.concurrency.value(),
        )

    def accept(self) -> None:
        """Save (secret to the keyring, the rest to the TOML file), then close."""
        settings = self.settings()
        secret = self.relay.secret.text()
        problem = check_agent_settings(settings)
        if problem is None and self.worker.some_models.isChecked() and not settings.models:
            problem = "Check at least one model, or offer every model."
        if problem is None:
            try:
                self.store.set(settings.proxy_url, secret)
                save_agent_file(self.paths.agent_file, settings)
            except SettingsError as exc:
                problem = str(exc)
        if problem is not None:
            self.error.setText(problem)
            return
        super().accept()
        self.completed.emit(settings, secret)


class _Page(QWizardPage):
    def __init__(
        self,
        title: str,
        subtitle: str,
        body: QWidget,
        complete: Callable[[], bool] | None = None,
        changed: SignalInstance | None = None,
    ) -> None:
        super().__init__()
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.body = QVBoxLayout(self)
        self.body.addWidget(body)
        self._complete = complete
        if changed is not None:
            changed.connect(lambda *_: self.completeChanged.emit())

    def isComplete(self) -> bool:
        return bool(self._complete()) if self._complete is not None else True


class SettingsDialog(QDialog):
    """Owns editing the settings after the first run, plus start on login and notifications."""

    saved = Signal(object, str, object)  # AgentSettings, secret, DesktopPrefs

    def __init__(
        self,
        paths: Paths,
        store: SecretStore,
        settings: AgentSettings,
        secret: str,
        prefs: DesktopPrefs,
        autostart: AutostartTarget,
        available: tuple[str, ...] = (),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("ModelRelay Desktop: settings")
        self.paths, self.store, self.autostart = paths, store, autostart
        self._original = settings
        self._secret = secret
        self.backend = BackendForm(())
        self.backend.url.setText(settings.backend_url)
        self.backend.found_label.hide()
        self.backend.found.hide()
        self.backend.detect_button.hide()
        self.backend.status.setText("")
        self.relay = RelayForm()
        self.relay.url.setText(settings.proxy_url)
        self.relay.secret.setText(secret)
        self.worker = WorkerForm()
        self.worker.name.setText(settings.worker_name)
        self.worker.concurrency.setValue(settings.max_concurrency)
        self.worker.set_models(available, settings.models)
        self.backend.models_listed.connect(
            lambda models: self.worker.set_models(models or (), self.worker.chosen_models())
        )
        self.start_on_login = QCheckBox("Start ModelRelay Desktop when I log in")
        self.start_on_login.setObjectName("start_on_login")
        self.start_on_login.setChecked(prefs.start_on_login)
        self.notifications = QCheckBox("Notify me when the connection is lost or comes back")
        self.notifications.setObjectName("notifications")
        self.notifications.setChecked(prefs.notifications)
        self.update_url = QLineEdit(prefs.update_url)
        self.update_url.setPlaceholderText("PyPI (default)")
        self.error = QLabel()
        self.error.setObjectName("settings_error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b91c1c")
        desktop = QFormLayout()
        desktop.addRow(self.start_on_login)
        desktop.addRow(self.notifications)
        desktop.addRow("Update feed:", self.update_url)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for title, widget in (
            ("Backend", self.backend),
            ("Relay", self.relay),
            ("Worker", self.worker),
        ):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(widget)
            layout.addWidget(box)
        box = QGroupBox("Desktop")
        box.setLayout(desktop)
        layout.addWidget(box)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def save(self) -> None:
        """Test a changed relay or secret live, then save and apply."""
        relay_changed = (
            self.relay.url.text().strip() != self._original.proxy_url
            or self.relay.secret.text() != self._secret
        )
        if relay_changed and not self.relay.ok:
            self.error.setText("Testing the relay and secret before saving…")
            self.save_button.setEnabled(False)  # one test at a time
            self.relay.checked.connect(self._after_check)
            self.relay.test()
            return
        self._commit()

    def _after_check(self, result: RelayCheck | None) -> None:
        self.relay.checked.disconnect(self._after_check)
        self.save_button.setEnabled(True)
        if result is not None and result.ok:
            self._commit()
        elif result is not None:
            self.error.setText(f"Not saved: {result.message}")

    def _commit(self) -> None:
        settings = attrs.evolve(
            self._original,
            proxy_url=self.relay.url.text().strip(),
            backend_url=self.backend.url.text().strip(),
            worker_name=self.worker.name.text().strip(),
            models=self.worker.chosen_models(),
            max_concurrency=self.worker.concurrency.value(),
        )
        prefs = DesktopPrefs(
            start_on_login=self.start_on_login.isChecked(),
            notifications=self.notifications.isChecked(),
            update_url=self.update_url.text().strip(),
        )
        secret = self.relay.secret.text()
        problem = check_agent_settings(settings)
        if problem is None:
            try:
                if secret != self._secret or settings.proxy_url != self._original.proxy_url:
                    self.store.set(settings.proxy_url, secret)
                save_agent_file(self.paths.agent_file, settings)
                save_prefs(self.paths.prefs_file, prefs)
                set_autostart(prefs.start_on_login, self.autostart, desktop_command())
            except (SettingsError, OSError) as exc:
                problem = str(exc)
        if problem is not None:
            self.error.setText(f"Not saved: {problem}")
            return
        self.accept()
        self.saved.emit(settings, secret, prefs)


class LogWindow(QDialog):
    """Owns the view of the agent's recent log lines (bounded) and "copy diagnostics"."""

    def __init__(self, app: DesktopApp) -> None:
        super().__init__()
        self.app = app
        self.setWindowTitle("ModelRelay Desktop: logs")
        self.resize(820, 420)
        self.view = QPlainTextEdit()
        self.view.setObjectName("log_view")
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(_LOG_LINES)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.view.setFont(font)
        self.view.setPlainText("\n".join(app.logs.lines))
        copy = QPushButton("Copy diagnostics")
        copy.setObjectName("copy_diagnostics")
        copy.clicked.connect(self.copy_diagnostics)
        close = QPushButton("Close")
        close.clicked.connect(self.hide)
        row = QHBoxLayout()
        row.addWidget(copy)
        row.addStretch(1)
        row.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view)
        layout.addLayout(row)
        app.log_line.connect(self.view.appendPlainText)

    def copy_diagnostics(self) -> None:
        """Put the diagnostics report on the clipboard."""
        QApplication.clipboard().setText(self.app.diagnostics())


class DesktopApp(QObject):
    """Owns the tray icon and menu, the tray model, the agent runner and the windows.

    Attributes:
        paths: Where the settings live.
        store: The keyring.
        prefs: The desktop preferences.
        settings: The agent settings in use, once configured.
        model: The tray model, once the agent runs.
        runner: The agent thread, once started.
        notifications: The last notifications shown (for the log and the tests).
    """

    quitting = Signal()
    log_line = Signal(str)  # on the GUI thread, for the log window

    def __init__(
        self,
        qapp: QApplication,
        paths: Paths,
        *,
        store: SecretStore | None = None,
        env_secret: str | None = None,
        candidates: tuple[tuple[str, str], ...] = KNOWN_BACKENDS,
        autostart: AutostartTarget | None = None,
        debounce_secs: float = 10.0,
        exit_app: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.qapp = qapp
        # What ends the program once the agent has drained (tests pass their own).
        self.exit_app = exit_app or qapp.quit
        self.paths = paths
        self.store = store or SecretStore()
        self.env_secret = env_secret
        self.candidates = candidates
        self.autostart = autostart or target_for()
        self.debounce_secs = debounce_secs
        self.prefs = DesktopPrefs()
        self.settings: AgentSettings | None = None
        self.config: AgentConfig | None = None
        self.model: TrayModel | None = None
        self.runner: AgentRunner | None = None
        self.notifications: collections.deque[Notification] = collections.deque(maxlen=50)
        self.wizard: SetupWizard | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.log_window: LogWindow | None = None
        self.update_box: QMessageBox | None = None
        self.last_update: UpdateInfo | Exception | None = None
        self._quit_requested = False
        # Agent events and log lines come from other threads through the mailbox.
        self.mailbox = Mailbox(self._deliver, self)
        self.logs = LogBuffer(_LOG_LINES)
        self.logs.on_line = lambda line: self.mailbox.post(_LogLine(line))
        logging.getLogger().addHandler(self.logs)
        if logging.getLogger().level > logging.INFO or logging.getLogger().level == 0:
            logging.getLogger().setLevel(logging.INFO)
        self.tray = QSystemTrayIcon()
        self.menu = QMenu()
        self.status_action = self.menu.addAction("Not configured")
        self.status_action.setEnabled(False)
        self.models_action = self.menu.addAction("Models: none")
        self.models_action.setEnabled(False)
        self.menu.addSeparator()
        self.console_action = self._action("Open console", self.open_console)
        self.pause_action = self._action("Pause", self.toggle_pause)
        self.menu.addSeparator()
        self.settings_action = self._action("Settings…", self.open_settings)
        self.logs_action = self._action("Logs…", self.open_logs)
        self.update_action = self._action("Check for updates…", self.check_updates)
        self.menu.addSeparator()
        self.quit_action = self._action("Quit", self.quit)
        self.tray.setContextMenu(self.menu)
        self.tray.activated.connect(self._activated)
        self._show(TrayState(TrayKind.DISCONNECTED, message="Not configured."))
        self.tray.show()
        self.timer = QTimer(self)
        self.timer.setInterval(_TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _action(self, text: str, slot: Callable[[], None]) -> QAction:
        action = self.menu.addAction(text)
        action.triggered.connect(slot)
        return action

    # --- start ---------------------------------------------------------------

    def start(self) -> None:
        """Load the settings and start the agent, or open the wizard when something is missing."""
        try:
            self.prefs = load_prefs(self.paths.prefs_file)
        except SettingsError as exc:
            log.warning("desktop preferences ignored: %s", exc)
        settings: AgentSettings | None = None
        if self.paths.agent_file.exists():
            try:
                settings = load_agent_file(self.paths.agent_file)
            except SettingsError as exc:
                log.error("cannot use the settings file: %s", exc)
        secret = None
        if settings is not None:
            secret = self.env_secret or settings.file_secret
            if not secret:
                try:
                    secret = self.store.get(settings.proxy_url)
                except SettingsError as exc:
                    log.error("%s", exc)
        if settings is None or not secret or not settings.proxy_url:
            self.open_wizard()
            return
        self.apply(settings, secret)

    def apply(self, settings: AgentSettings, secret: str) -> None:
        """Run the agent with these settings (start it, or restart it after a drain)."""
        try:
            config = settings.agent_config(secret)
        except ConfigError as exc:
            log.error("the settings are not valid: %s", exc)
            self._show(TrayState(TrayKind.ERROR, message=str(exc)))
            return
        self.settings, self.config = settings, config
        paused = self.model.paused if self.model is not None else False
        self.model = TrayModel(
            relay=settings.proxy_url,
            backend=config.backend_display,
            worker_name=config.worker_name,
            max_concurrency=config.max_concurrency,
            debounce_secs=self.debounce_secs,
            paused=paused,
        )
        if self.runner is None or not self.runner.alive:
            self.runner = AgentRunner(config, self.mailbox.post)
            self.runner.start()
        else:
            self.runner.reconfigure(config)
        self._refresh()

    # --- events from the agent ------------------------------------------------

    def _deliver(self, item: object) -> None:
        if isinstance(item, _LogLine):
            self.log_line.emit(item.text)
        else:
            self._on_event(item)  # type: ignore[arg-type]  # the runner posts only its events

    def _on_event(self, event: RunnerEvent) -> None:
        if isinstance(event, Finished):
            if self._quit_requested:
                log.info("quit: the agent has stopped; exiting")
                self.exit_app()
            else:  # the agent thread crashed: its traceback is in the log
                self.model = None
                self._show(TrayState(TrayKind.ERROR, message="The agent stopped: see Logs."))
            return
        if self.model is None:
            return
        if isinstance(event, Paused):
            self.model.set_paused(True)
        else:
            agent_event: AgentEvent = event
            self._notify(self.model.apply(agent_event, time.monotonic()))
        self._refresh()

    def _tick(self) -> None:
        if self.model is not None:
            self._notify(self.model.tick(time.monotonic()))

    def _notify(self, notes: list[Notification]) -> None:
        for note in notes:
            self.notifications.append(note)
            log.info("notification: %s: %s", note.title, note.text)
            if self.prefs.notifications and self.tray.isVisible():
                icon = (
                    QSystemTrayIcon.MessageIcon.Warning
                    if note.error
                    else QSystemTrayIcon.MessageIcon.Information
                )
                self.tray.showMessage(note.title, note.text, icon, 8000)

    @property
    def state(self) -> TrayState:
        """What the tray shows now."""
        return self._state

    def _refresh(self) -> None:
        if self.model is None:
            return
        state = self.model.state
        if self._quit_requested:
            state = attrs.evolve(state, message=f"Quitting: {state.message}")
        self._show(state)
        self.tray.setToolTip(self.model.tooltip)
        models = ", ".join(state.models) if state.models else "none yet"
        self.models_action.setText(f"Models: {models}")
        self.pause_action.setText("Resume" if self.model.paused else "Pause")

    def _show(self, state: TrayState) -> None:
        previous = getattr(self, "_state", None)
        if previous is None or (previous.kind, previous.in_flight) != (state.kind, state.in_flight):
            # One line per change: what an operator (and the Xvfb test) follows.
            log.info(
                "tray: %s",
                state.kind.value,
                extra={
                    "state": state.kind.value,
                    "in_flight": state.in_flight,
                    "why": state.message,
                },
            )
        self._state = state
        self.tray.setIcon(state_icon(state))
        self.status_action.setText(state.message)
        if self.model is None:
            self.tray.setToolTip(f"ModelRelay: {state.message}")

    # --- menu -------------------------------------------------------------------

    def console_url(self) -> str | None:
        """The relay's web console."""
        if self.settings is None:
            return None
        return self.settings.proxy_url.rstrip("/") + "/console"

    def open_console(self) -> None:
        """Open the relay's web console in the browser."""
        url = self.console_url()
        if url:
            QDesktopServices.openUrl(QUrl(url))

    def toggle_pause(self) -> None:
        """Pause (drain, then stay disconnected) or resume."""
        if self.runner is None or self.model is None:
            return
        if self.model.paused:
            self.model.set_paused(False)
            self.runner.resume()
            log.info("resumed by the user")
        else:
            self.model.set_paused(True)
            self.runner.pause()
            log.info("paused by the user: draining")
        self._refresh()

    def open_wizard(self) -> None:
        """Open the first-run wizard."""
        self.wizard = SetupWizard(self.paths, self.store, self.candidates)
        self.wizard.completed.connect(self._wizard_done)
        self.wizard.show()

    def _wizard_done(self, settings: AgentSettings, secret: str) -> None:
        log.info("setup complete", extra={"settings_file": str(self.paths.agent_file)})
        self.apply(settings, secret)

    def open_settings(self) -> None:
        """Open Settings (the wizard when nothing is configured yet)."""
        if self.settings is None or self.config is None:
            self.open_wizard()
            return
        self.settings_dialog = SettingsDialog(
            self.paths,
            self.store,
            self.settings,
            self.config.worker_secret,
            self.prefs,
            self.autostart,
            self.state.models,
        )
        self.settings_dialog.saved.connect(self._settings_saved)
        self.settings_dialog.show()

    def _settings_saved(self, settings: AgentSettings, secret: str, prefs: DesktopPrefs) -> None:
        self.prefs = prefs
        log.info("settings saved", extra={"settings_file": str(self.paths.agent_file)})
        self.apply(settings, secret)

    def open_logs(self) -> None:
        """Show the log window."""
        if self.log_window is None:
            self.log_window = LogWindow(self)
        self.log_window.show()
        self.log_window.raise_()

    def diagnostics(self) -> str:
        """The "copy diagnostics" report."""
        from PySide6.QtCore import qVersion

        return diagnostics_text(self.config, self.state.message, self.logs.problems, qVersion())

    def check_updates(self) -> None:
        """Ask the package index (in the background) and show the answer."""
        url = self.prefs.update_url

        def done(result: object) -> None:
            self.last_update = result if isinstance(result, UpdateInfo | Exception) else None
            box = QMessageBox()
            box.setWindowTitle("ModelRelay Desktop: updates")
            box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            if isinstance(result, UpdateInfo):
                box.setIcon(QMessageBox.Icon.Information)
                box.setText(result.summary())
            else:
                box.setIcon(QMessageBox.Icon.Warning)
                box.setText(f"Could not check for updates: {result}")
            self.update_box = box
            box.open()

        in_background(self, lambda: check_for_update(url), done)

    def quit(self) -> None:
        """Drain in-flight requests (bounded), then exit."""
        if self._quit_requested:
            return
        self._quit_requested = True
        self.quitting.emit()
        log.info("quit: draining before exit")
        if self.runner is None or not self.runner.alive:
            self.exit_app()
            return
        self.runner.quit()
        self._refresh()
        # The runner bounds the drain; this bounds a runner that would not end.
        bound = (self.config.drain_timeout if self.config else 30.0) + 15.0
        QTimer.singleShot(int(bound * 1000), self.exit_app)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.open_logs()

    def close(self) -> None:
        """Detach from logging (tests build several apps in one process)."""
        logging.getLogger().removeHandler(self.logs)
        self.mailbox.close()
        self.timer.stop()
        self.tray.hide()


def _watch_signals(
    qapp: QApplication, inbox: SignalInbox, on_signal: Callable[[int], None]
) -> QSocketNotifier:
    """Deliver the inbox's signals to `on_signal` on Qt's loop."""
    notifier = QSocketNotifier(inbox.reader.fileno(), QSocketNotifier.Type.Read, qapp)

    def wake() -> None:
        for signum in inbox.take():
            on_signal(signum)

    notifier.activated.connect(wake)
    # A signal that came while the app was starting: its byte is waiting already.
    QTimer.singleShot(0, wake)
    return notifier


def run_desktop(config_file: Path | None = None, inbox: SignalInbox | None = None) -> int:
    """The ``agent desktop`` program.

    Args:
        config_file: An ``agent run --config`` file to start straight into the
            tray with (the secret from ``WORKER_SECRET`` when set).
        inbox: SIGTERM/SIGINT, caught since the command started (made here if None).

    Returns:
        The exit code.
    """
    inbox = inbox or SignalInbox()
    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qapp, QApplication)
    qapp.setApplicationName("ModelRelay Desktop")
    qapp.setQuitOnLastWindowClosed(False)
    if config_file is not None and not config_file.exists():
        print(f"agent desktop: error: cannot read {str(config_file)!r}", file=sys.stderr)
        return 2
    paths = Paths.default(config_file)
    app = DesktopApp(qapp, paths, env_secret=os.environ.get("WORKER_SECRET") or None)
    signals_seen: list[int] = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            log.info("%s received: quitting as Quit does", signal.Signals(signum).name)
            app.quit()
        else:
            qapp.exit(0)

    notifier = _watch_signals(qapp, inbox, on_signal)
    app.start()
    if not QSystemTrayIcon.isSystemTrayAvailable():
        # Nothing to click: the log window stands in, and closing it quits (after the drain).
        log.warning("no system tray on this desktop: showing the log window instead")
        app.open_logs()
        qapp.lastWindowClosed.connect(app.quit)
    code = qapp.exec()
    notifier.setEnabled(False)
    app.close()
    inbox.close()
    return code
