"""Every module of both daemons imports where Unix-only modules do not exist (Windows, ...).

The relay and the agent aim to run on Windows and macOS too, so none of our
modules may import a Unix-only standard module (`resource`, `fcntl`, ...) at
module level: a function that needs one imports it when it runs, and copes
without it. The check runs in a fresh interpreter: it first loads the
third-party modules ours need (they pick their own platform branches), then
hides the Unix-only modules and imports each of our modules anew.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wire", "mrcommon", "relay", "agent")
UNIX_ONLY = (
    "resource",
    "fcntl",
    "termios",
    "tty",
    "pty",
    "pwd",
    "grp",
    "posix",
    "crypt",
    "syslog",
    "spwd",
    "nis",
    "curses",
    "_curses",
    "readline",
    "_posixsubprocess",
)


def _our_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = [str(ROOT / package)]
        names += [f"{package}.{m.name}" for m in pkgutil.walk_packages(path)]
    # `__main__` modules run the program when imported; they only import cli.
    return sorted(n for n in set(names) if not n.endswith(".__main__"))


_LIST_THIRD_PARTY = """
import importlib, json, sys
ours = {ours!r}
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(n for n in sys.modules if n.split(".")[0] not in ours)))
"""

_IMPORT_HIDDEN = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # a third-party module that only loads in some contexts
for name in json.loads(sys.argv[2]):
    sys.modules.pop(name, None)
    sys.modules[name] = None  # `import name` now raises ImportError
failures = {}
for name in json.loads(sys.argv[3]):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failures[name] = str(exc)
print(json.dumps(failures))
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_no_unix_only_import_at_module_level() -> None:
    ours = _our_modules()
    assert "relay.server" in ours
    assert "agent.daemon" in ours
    third_party = _python(_LIST_THIRD_PARTY.format(ours=set(PACKAGES)), json.dumps(ours))
    failures = json.loads(
        _python(_IMPORT_HIDDEN, third_party.strip(), json.dumps(UNIX_ONLY), json.dumps(ours))
    )
    assert failures == {}


def test_the_check_catches_a_module_level_unix_import(tmp_path: Path) -> None:
    # The same machinery on a module that imports `resource` at the top.
    (tmp_path / "unixy.py").write_text("import resource\n")
    code = _IMPORT_HIDDEN.replace(
        "import importlib,", f"sys_path = {str(tmp_path)!r}\nimport importlib,"
    )
    code = code.replace("failures = {}", "sys.path.insert(0, sys_path)\nfailures = {}")
    failures = json.loads(_python(code, "[]", json.dumps(UNIX_ONLY), json.dumps(["unixy"])))
    assert "unixy" in failures
