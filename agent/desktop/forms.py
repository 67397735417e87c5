"""The wizard's and the Settings dialog's forms (Qt widgets), and running work off the GUI thread.

The same three forms serve both windows: the backend (URL, detection, its
models), the relay (URL, secret, a live test), the worker (name, models
offered, concurrency). Network work (detection, the relay test) runs in a
short-lived thread with `trio.run`; its result comes back through a Qt
signal, so the GUI never blocks on the network. `Mailbox` is the one way back from
any other thread (the agent's included) to the GUI thread.
"""

import contextlib
import queue
import socket
import threading
from collections.abc import Awaitable, Callable

import trio
from PySide6.QtCore import QObject, QSocketNotifier, Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from agent.config import DEFAULT_BACKEND_URL
from agent.desktop.detect import FoundBackend, RelayCheck, check_relay, detect_backends, list_models
from agent.events import FailureKind

__all__ = ["BackendForm", "Mailbox", "RelayForm", "WorkerForm", "in_background"]


class Mailbox(QObject):
    """Owns the way from other threads into the GUI thread: a bounded queue and a wake-up socket.

    Other threads never call Qt, not even a signal's ``emit``: the agent
    thread stays pure Python (and PySide's cross-thread paths have had
    reference-count bugs: 6.12.0 on Python 3.11 drifts ``None``'s count on
    queued emissions). `post` puts the item in a bounded queue and writes one
    byte to a socket; a `QSocketNotifier` on the GUI thread wakes up and
    delivers the queue.
    """

    def __init__(
        self, deliver: Callable[[object], None], parent: QObject | None = None, size: int = 10_000
    ) -> None:
        super().__init__(parent)
        self._deliver = deliver
        self._queue: queue.Queue[object] = queue.Queue(size)
        self.dropped = 0
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._notifier = QSocketNotifier(self._reader.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._drain)

    def post(self, item: object) -> None:
        """Hand `item` to the GUI thread (any thread; never blocks; drops when full)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return
        # A full socket buffer or a closed mailbox: a wake-up is pending, or nobody listens.
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._deliver(item)

    def close(self) -> None:
        """Stop delivering; later posts are dropped."""
        self._notifier.setEnabled(False)
        self._reader.close()
        self._writer.close()


def in_background(
    parent: QObject,
    work: Callable[[], object],
    on_done: Callable[[object], None],
) -> None:
    """Run `work` on a thread; call `on_done(result or exception)` on the GUI thread.

    Args:
        parent: Owns the mailbox until the result arrives.
        work: Blocking work (e.g. ``lambda: trio.run(fn)``).
        on_done: Receives the result, or the exception `work` raised.
    """

    def deliver(result: object) -> None:
        mailbox.close()
        mailbox.deleteLater()
        on_done(result)

    mailbox = Mailbox(deliver, parent, size=1)

    def body() -> None:
        try:
            result: object = work()
        except Exception as exc:
            result = exc
        mailbox.post(result)

    threading.Thread(target=body, name="desktop-io", daemon=True).start()


def _trio(fn: Callable[..., Awaitable[object]], *args: object) -> Callable[[], object]:
    return lambda: trio.run(fn, *args)


class BackendForm(QWidget):
    """Owns the backend fields: URL, detected servers, the models it lists."""

    models_listed = Signal(object)  # tuple[str, ...] | None

    def __init__(
        self, candidates: tuple[tuple[str, str], ...], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.candidates = candidates
        self.models: tuple[str, ...] | None = None
        self.found = QListWidget()
        self.found.setObjectName("found_backends")
        self.found.setMaximumHeight(90)
        self.url = QLineEdit(DEFAULT_BACKEND_URL)
        self.url.setObjectName("backend_url")
        self.detect_button = QPushButton("Detect again")
        self.list_button = QPushButton("List models")
        self.list_button.setObjectName("list_models")
        self.status = QLabel("Looking for LLM servers on this computer…")
        self.status.setWordWrap(True)
        self.status.setObjectName("backend_status")
        row = QHBoxLayout()
        row.addWidget(self.url, 1)
        row.addWidget(self.list_button)
        layout = QVBoxLayout(self)
        self.found_label = QLabel("LLM servers found (llama-server, Ollama, LM Studio, vLLM):")
        layout.addWidget(self.found_label)
        layout.addWidget(self.found)
        layout.addWidget(self.detect_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(QLabel("Backend URL:"))
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.found.currentItemChanged.connect(self._pick)
        self.detect_button.clicked.connect(self.detect)
        self.list_button.clicked.connect(self.list_models)
        self.url.textEdited.connect(self._url_edited)

    def detect(self) -> None:
        """Ask the usual servers on their default ports (in the background)."""
        self.status.setText("Looking for LLM servers on this computer…")
        in_background(self, _trio(detect_backends, self.candidates), self._detected)

    def _detected(self, result: object) -> None:
        self.found.clear()
        if not isinstance(result, list) or not result:
            self.status.setText("No LLM server answered on the usual ports: type its URL.")
            return
        for backend in result:
            assert isinstance(backend, FoundBackend)
            item = QListWidgetItem(
                f"{backend.name} at {backend.url}: {len(backend.models)} model(s)"
            )
            item.setData(Qt.ItemDataRole.UserRole, backend)
            self.found.addItem(item)
        self.found.setCurrentRow(0)

    def _pick(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        backend = item.data(Qt.ItemDataRole.UserRole)
        self.url.setText(backend.url)
        self._listed(backend.models)

    def _url_edited(self) -> None:
        self.models = None
        self.models_listed.emit(None)

    def list_models(self) -> None:
        """Ask the URL in the field for its models (in the background)."""
        self.status.setText(f"Asking {self.url.text()}…")
        in_background(self, _trio(list_models, self.url.text().strip()), self._listed)

    def _listed(self, result: object) -> None:
        if isinstance(result, tuple):
            self.models = result
            names = ", ".join(result) if result else "none yet"
            self.status.setText(f"The backend answers. Models: {names}")
        else:
            self.models = None
            self.status.setText(f"No answer from {self.url.text()}: is the server running?")
        self.models_listed.emit(self.models)


class RelayForm(QWidget):
    """Owns the relay fields: URL, worker secret, and the live test of the pair."""

    checked = Signal(object)  # RelayCheck

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.url = QLineEdit()
        self.url.setObjectName("relay_url")
        self.url.setPlaceholderText("https://relay.example.com")
        self.secret = QLineEdit()
        self.secret.setObjectName("worker_secret")
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.test_button = QPushButton("Test connection")
        self.test_button.setObjectName("test_relay")
        self.status = QLabel("The secret is tested against the relay before it is saved.")
        self.status.setObjectName("relay_status")
        self.status.setWordWrap(True)
        self.result: RelayCheck | None = None
        self._tested: tuple[str, str] | None = None
        form = QFormLayout(self)
        form.addRow("Relay URL:", self.url)
        form.addRow("Worker secret:", self.secret)
        form.addRow("", self.test_button)
        form.addRow(self.status)
        self.test_button.clicked.connect(self.test)
        self.url.textChanged.connect(self._changed)
        self.secret.textChanged.connect(self._changed)

    @property
    def ok(self) -> bool:
        """Whether the current URL and secret passed the test."""
        return (
            self.result is not None
            and self.result.ok
            and self._tested == (self.url.text().strip(), self.secret.text())
        )

    def _changed(self) -> None:
        if self.result is not None and not self.ok:
            self.result = None
            self.status.setText("Changed: test the connection again.")
            self.checked.emit(None)

    def test(self) -> None:
        """Open the agent's connection with the secret (in the background)."""
        pair = (self.url.text().strip(), self.secret.text())
        self.test_button.setEnabled(False)
        self.status.setText(f"Connecting to {pair[0]}…")

        def done(result: object) -> None:
            self.test_button.setEnabled(True)
            if not isinstance(result, RelayCheck):
                result = _crash(result)
            self.result = result
            self._tested = pair
            self.status.setText(("✔ " if result.ok else "✘ ") + result.message)
            self.checked.emit(result)

        in_background(self, _trio(check_relay, *pair), done)


def _crash(result: object) -> RelayCheck:
    return RelayCheck(FailureKind.UNREACHABLE, f"The test failed: {result}")


class WorkerForm(QWidget):
    """Owns the worker fields: name, which models to offer, concurrency."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = QLineEdit()
        self.name.setObjectName("worker_name")
        self.name.setPlaceholderText(socket.gethostname())
        self.all_models = QRadioButton("Every model the backend lists (follows its changes)")
        self.all_models.setObjectName("all_models")
        self.some_models = QRadioButton("Only the models checked below")
        self.some_models.setObjectName("some_models")
        group = QButtonGroup(self)
        group.addButton(self.all_models)
        group.addButton(self.some_models)
        self.all_models.setChecked(True)
        self.model_list = QListWidget()
        self.model_list.setObjectName("model_list")
        self.model_list.setMaximumHeight(110)
        self.concurrency = QSpinBox()
        self.concurrency.setObjectName("concurrency")
        self.concurrency.setRange(1, 256)
        form = QFormLayout(self)
        form.addRow("Worker name:", self.name)
        form.addRow("Models:", self.all_models)
        form.addRow("", self.some_models)
        form.addRow("", self.model_list)
        form.addRow("Requests at once:", self.concurrency)
        self.all_models.toggled.connect(lambda on: self.model_list.setEnabled(not on))
        self.model_list.setEnabled(False)

    def set_models(self, available: tuple[str, ...], chosen: tuple[str, ...] = ()) -> None:
        """Fill the model list; `chosen` empty means "every model"."""
        self.model_list.clear()
        for name in dict.fromkeys((*available, *chosen)):
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if (not chosen or name in chosen) else Qt.CheckState.Unchecked
            )
            self.model_list.addItem(item)
        (self.some_models if chosen else self.all_models).setChecked(True)

    def chosen_models(self) -> tuple[str, ...]:
        """The checked models, or () for "every model"."""
        if self.all_models.isChecked():
            return ()
        return tuple(
            self.model_list.item(i).text()
            for i in range(self.model_list.count())
            if self.model_list.item(i).checkState() == Qt.CheckState.Checked
        )
