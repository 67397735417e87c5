"""The open-file limit both daemons raise at start-up."""

import sys
from collections.abc import Iterator

import pytest

from mrcommon import limits

resource = pytest.importorskip("resource", reason="no RLIMIT_NOFILE on this platform")


@pytest.fixture
def nofile() -> Iterator[tuple[int, int]]:
    """The limits as they were; put back after the test (they are process-wide)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_raises_the_soft_limit_to_the_hard_one(nofile: tuple[int, int]) -> None:
    _, hard = nofile
    if hard == resource.RLIM_INFINITY or hard <= 64:
        pytest.skip(f"needs a finite hard limit above 64 (it is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    assert limits.raise_open_file_limit() == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_a_soft_limit_already_at_the_hard_one_is_left_alone(nofile: tuple[int, int]) -> None:
    _, hard = nofile
    if hard == resource.RLIM_INFINITY:
        pytest.skip("needs a finite hard limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert limits.raise_open_file_limit() == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


@pytest.mark.usefixtures("nofile")
def test_an_unlimited_hard_limit_raises_the_soft_one_to_what_the_kernel_allows() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pytest.skip("raising the hard limit to unlimited needs privileges this run lacks")
    got = limits.raise_open_file_limit()
    # Either the kernel took 2**20 or it refused and the limit stayed where it was.
    assert got in (limits.UNLIMITED_TARGET, 64)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (got, resource.RLIM_INFINITY)


def test_without_the_resource_module_there_is_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no `resource`: the function says so instead of failing."""
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError
    assert limits.raise_open_file_limit() is None


def test_the_module_imports_without_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resource", None)
    monkeypatch.delitem(sys.modules, "mrcommon.limits")
    import mrcommon.limits  # the import itself is what is tested

    assert mrcommon.limits.raise_open_file_limit() is None
