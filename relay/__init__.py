"""ModelRelay's relay: one stable endpoint in front of many GPU boxes."""

from mrcommon.meta import distribution_version

__all__ = ["__version__"]

__version__ = distribution_version()
