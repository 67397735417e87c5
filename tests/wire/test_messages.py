"""Tests for wire.messages and the package surface."""

import ast
import typing
from pathlib import Path

import attrs
import pytest

import wire
from wire import (
    PROTOCOL_VERSION,
    U16,
    U32,
    U64,
    Cancel,
    CancelReason,
    ModelsUpdate,
    OtherReason,
    Register,
    ResponseChunk,
    TokenCounts,
    UInt,
    codec,
    errors,
    limits,
    messages,
)

WIRE_DIR = Path(wire.__file__).parent


def test_protocol_version() -> None:
    assert PROTOCOL_VERSION == "2026-04-bridge-v1"
    assert wire.PROTOCOL_VERSION is messages.PROTOCOL_VERSION


def test_messages_are_frozen() -> None:
    chunk = ResponseChunk(request_id="r", chunk="c")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        chunk.chunk = "d"  # type: ignore[misc]


def test_optional_fields_default_to_none() -> None:
    assert Register(worker_name="w", models=("m",), max_concurrent=1) == Register(
        "w", ("m",), 1, None, None, None
    )
    assert ModelsUpdate(models=(), current_load=0).draining is None
    assert TokenCounts() == TokenCounts(None, None, None)


def test_cancel_reason_is_a_str_enum() -> None:
    assert [r.value for r in CancelReason] == [
        "client_disconnect",
        "timeout",
        "graceful_shutdown",
        "worker_disconnect",
        "requeue_exhausted",
        "server_shutdown",
    ]
    as_text: str = CancelReason.TIMEOUT
    assert as_text == "timeout"
    assert str(CancelReason.TIMEOUT) == "timeout"
    assert CancelReason("timeout") is CancelReason.TIMEOUT
    assert Cancel("r", OtherReason("x")) != Cancel("r", CancelReason.TIMEOUT)


@pytest.mark.parametrize(("alias", "bits"), [(U16, 16), (U32, 32), (U64, 64)])
def test_uint_aliases_are_annotated_ints(alias: object, bits: int) -> None:
    base, marker = typing.get_args(alias)
    assert base is int
    assert marker == UInt(bits)
    assert marker.max == 2**bits - 1


@pytest.mark.parametrize("module", [wire, codec, errors, limits, messages])
def test_every_module_declares_all(module: object) -> None:
    names = getattr(module, "__all__", None)
    assert names, module
    for name in names:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", [codec, errors, limits, messages])
def test_package_reexports_every_public_name(module: object) -> None:
    for name in getattr(module, "__all__", ()):
        assert getattr(wire, name) is getattr(module, name), name
        assert name in wire.__all__


ALLOWED_IMPORTS = {"attrs", "cattrs", "json", "enum", "typing", "collections"}


@pytest.mark.parametrize("path", sorted(WIRE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_wire_imports_no_io_libraries(path: Path) -> None:
    tree = ast.parse(path.read_text("utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
