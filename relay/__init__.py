"""ModelRelay's relay: one stable endpoint in front of many GPU boxes."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("modelrelay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
