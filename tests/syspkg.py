"""Skip (or, under CI=true, fail) a test that needs a system program that is absent."""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["require_tool"]


def require_tool(name: str, package: str) -> str:
    """The path of program `name`; skip loudly when it is missing, fail under CI.

    Args:
        name: The executable to look for on PATH.
        package: The Debian package that provides it (in the Makefile's
            SYSTEM_PACKAGES, so `make deps-system` installs it).
    """
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed (Debian package {package}; `make deps-system`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI installs it", pytrace=False)
    pytest.skip(reason)
