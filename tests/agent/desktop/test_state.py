"""The tray's state machine: agent events in, icon state and notifications out (no Qt)."""

from agent.desktop.state import TrayKind, TrayModel
from agent.events import (
    Connected,
    Connecting,
    Disconnected,
    FailureKind,
    LoadChanged,
    ModelsChanged,
    Stopped,
)


def _model(debounce: float = 10.0) -> TrayModel:
    return TrayModel(
        relay="https://relay.example",
        backend="http://127.0.0.1:8000",
        worker_name="box",
        max_concurrency=4,
        debounce_secs=debounce,
    )


def test_connect_relay_and_idle() -> None:
    model = _model()
    assert model.state.kind is TrayKind.DISCONNECTED
    model.apply(Connecting(), 0)
    assert model.state.kind is TrayKind.CONNECTING
    model.apply(Connected("w1", ("m1",)), 0)
    assert model.state.kind is TrayKind.CONNECTED
    model.apply(LoadChanged(3), 0)
    state = model.state
    assert (state.kind, state.in_flight) == (TrayKind.RELAYING, 3)
    assert "Load: 3/4" in model.tooltip
    assert "Worker: box" in model.tooltip
    assert "Models: m1" in model.tooltip
    model.apply(LoadChanged(0), 0)
    assert model.state.kind is TrayKind.CONNECTED


def test_each_error_kind_has_its_own_message() -> None:
    messages = set()
    for kind in (FailureKind.AUTH, FailureKind.TLS, FailureKind.UNREACHABLE, FailureKind.VERSION):
        model = _model()
        model.apply(Connecting(), 0)
        model.apply(Disconnected(kind, "detail", 1.0), 0)
        assert model.state.kind is TrayKind.ERROR
        messages.add(model.state.message)
        # Retrying does not hide the error: the icon stays red until registered.
        model.apply(Connecting(), 1)
        assert model.state.kind is TrayKind.ERROR
    assert len(messages) == 4
    model = _model()
    model.apply(Connected("w1", ("m1",)), 0)
    model.apply(ModelsChanged(("m1",), backend_reachable=False), 0)
    assert model.state.kind is TrayKind.ERROR
    assert "backend" in model.state.message
    assert model.state.message not in messages
    model.apply(ModelsChanged(("m1", "m2"), backend_reachable=True), 0)
    assert model.state.kind is TrayKind.CONNECTED
    assert model.state.models == ("m1", "m2")  # the live model list


def test_wrong_secret_is_notified_once() -> None:
    model = _model()
    notes = []
    for attempt in range(3):
        model.apply(Connecting(), attempt)
        notes += model.apply(Disconnected(FailureKind.AUTH, "401", 10.0), attempt)
    assert len(notes) == 1
    assert notes[0].error
    assert "secret" in notes[0].text


def test_loss_is_announced_after_the_debounce_and_recovery_follows() -> None:
    model = _model(debounce=10)
    model.apply(Connected("w1", ("m1",)), 0)
    assert model.apply(Disconnected(FailureKind.DROPPED, "1006", 1.0), 100) == []
    assert model.state.kind is TrayKind.DISCONNECTED
    model.apply(Connecting(), 101)
    model.apply(Disconnected(FailureKind.UNREACHABLE, "refused", 2.0), 101)
    assert model.tick(109.9) == []
    (lost,) = model.tick(110)
    assert lost.title == "ModelRelay: connection lost"
    assert model.tick(200) == []  # once
    (back,) = model.apply(Connected("w2", ("m1",)), 201)
    assert back.title == "ModelRelay: back online"


def test_a_short_blip_is_not_announced() -> None:
    model = _model(debounce=10)
    model.apply(Connected("w1", ("m1",)), 0)
    model.apply(Disconnected(FailureKind.DROPPED, "1006", 1.0), 100)
    assert model.apply(Connected("w2", ("m1",)), 103) == []
    assert model.tick(200) == []


def test_pause_is_not_a_loss() -> None:
    model = _model(debounce=1)
    model.apply(Connected("w1", ("m1",)), 0)
    model.set_paused(True)
    model.apply(Disconnected(FailureKind.DRAINED, "", 1.0), 1)
    model.apply(Stopped(), 1)
    assert model.state.kind is TrayKind.PAUSED
    assert model.tick(100) == []
    model.set_paused(False)
    model.apply(Connecting(), 101)
    assert model.state.kind is TrayKind.CONNECTING
