"""No code of ours, tests and scripts included, replaces a dependency's private attributes.

A dependency's ``_name`` is not its interface: replacing it at run time
(``client._transport = ...``, ``monkeypatch.setattr(obj, "_x", ...)``) ties a
test to internals that change without notice, and tests something the
product never runs. The product offers a public seam instead (e.g.
`agent.backend.open_backend`'s ``httpx_transport``).

Only the source can be checked, not the types, so the rule is by syntax:
writing (assigning, deleting, patching) an underscore attribute is allowed on
``self``/``cls`` and on names imported from our own packages (a test may
stub its own module's private helper), never on anything else. Dunders
(``exc.__cause__``) are the language's, not private.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent
# Where the rule holds: all of our code. (Syntax cannot tell our own objects
# from a dependency's, so our classes keep their underscored fields to
# themselves too.)
_SCANNED = ("relay", "agent", "wire", "mrcommon", "tests", "scripts")
# Our own top-level packages: their private names are ours to stub.
_OURS = frozenset({"agent", "relay", "wire", "mrcommon", "tests", "scripts"})
# Calls that replace or remove an attribute named by their second argument:
# setattr/delattr, pytest's monkeypatch.setattr/delattr, unittest.mock's patch.object.
_PATCHERS = frozenset({"setattr", "delattr", "object"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(tree: ast.Module) -> set[str]:
    """The names the module binds by importing from our own packages (any scope)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _OURS:
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").split(".")[0] in _OURS
        ):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _foreign(obj: ast.expr, own: set[str]) -> bool:
    """Whether `obj` may be a dependency's object (or class, or module)."""
    if isinstance(obj, ast.Name) and obj.id in ("self", "cls"):
        return False
    return _root(obj) not in own


def _written(target: ast.expr) -> Iterator[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _written(element)
    elif isinstance(target, ast.Starred):
        yield from _written(target.value)
    else:
        yield target


def _writes_private(target: ast.expr, own: set[str]) -> bool:
    if isinstance(target, ast.Attribute):
        return _private(target.attr) and _foreign(target.value, own)
    # obj.__dict__["_x"] = ... / vars(obj)["_x"] = ...
    if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
        key, holder = target.slice.value, target.value
        if isinstance(key, str) and _private(key):
            if isinstance(holder, ast.Attribute) and holder.attr == "__dict__":
                return _foreign(holder.value, own)
            if (
                isinstance(holder, ast.Call)
                and isinstance(holder.func, ast.Name)
                and holder.func.id == "vars"
                and holder.args
            ):
                return _foreign(holder.args[0], own)
    return False


def _patches_private(call: ast.Call, own: set[str]) -> bool:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    args = call.args
    if not args:
        return False
    first = args[0]
    # monkeypatch.setattr("pkg.mod._x", value) / mock.patch("pkg.mod._x")
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        parts = first.value.split(".")
        return (
            name in ("setattr", "delattr", "patch")
            and len(parts) > 1
            and _private(parts[-1])
            and parts[0] not in _OURS
        )
    if name in _PATCHERS and len(args) > 1:
        attribute = args[1]
        return (
            isinstance(attribute, ast.Constant)
            and isinstance(attribute.value, str)
            and _private(attribute.value)
            and _foreign(first, own)
        )
    return False


def private_writes(source: str) -> list[int]:
    """The lines of `source` that write a private attribute of something not ours."""
    tree = ast.parse(source)
    own = _own_names(tree)
    lines: list[int] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            targets = [node.target]
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            targets = [node.optional_vars]
        if any(_writes_private(t, own) for target in targets for t in _written(target)):
            lines.append(getattr(node, "lineno", 0) or getattr(targets[0], "lineno", 0))
        if isinstance(node, ast.Call) and _patches_private(node, own):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_private_attribute_of_a_dependency_is_replaced() -> None:
    offenders = [
        f"{path.relative_to(_ROOT)}:{line}"
        for package in _SCANNED
        for path in sorted((_ROOT / package).rglob("*.py"))
        for line in private_writes(path.read_text("utf-8"))
    ]
    assert not offenders, f"use a public seam, not a dependency's private attribute: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "client._transport = httpx.MockTransport(handler)",
        "for c in backend.clients:\n    c._transport = t",
        "client._transport._pool = None",
        "a, client._transport = 1, t",
        "x._count += 1",
        "x._count: int = 1",
        "del client._transport",
        "self.client._transport = t",
        "setattr(client, '_transport', t)",
        "monkeypatch.setattr(httpx.AsyncClient, '_transport', t)",
        "monkeypatch.delattr(client, '_transport')",
        "monkeypatch.setattr('httpx._client.AsyncClient._transport', t)",
        "mock.patch.object(httpx.AsyncClient, '_send_single_request', f)",
        "with mock.patch('httpx._config._ssl'):\n    pass",
        "client.__dict__['_transport'] = t",
        "vars(client)['_transport'] = t",
        "import httpx\nhttpx._api = None",
    ],
)
def test_the_scan_sees_a_private_write(source: str) -> None:
    assert private_writes(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "self._count = 1",
        "cls._instances = {}",
        "client.transport = t",
        "exc.__cause__ = other",
        "from agent import cli\nmonkeypatch.setattr(cli, '_serve', f)",
        "import tests.relay.pg_cluster as pg\nmonkeypatch.setattr(pg, '_bin_dir', f)",
        "import agent.cli\nagent.cli._serve = f",
        "from . import helpers\nhelpers._cache = {}",
        "monkeypatch.setattr('agent.cli._serve', f)",
        "monkeypatch.setattr(client, 'transport', t)",
        "value = client._transport",
    ],
)
def test_the_scan_allows_what_is_ours_or_public(source: str) -> None:
    assert private_writes(source) == []
