"""Errors `agent llamafile` raises on purpose; the CLI prints each as one line, no traceback.

The tree::

    LlamafileError              root: `message` is what the operator reads
    ├── CatalogError            a catalog file or URL is invalid or unreachable
    ├── UnknownModel            no catalog entry (or downloaded file) for that name
    ├── DownloadError           a download failed
    │   ├── DownloadInterrupted the connection broke: the `.part` file is kept, run again
    │   └── ChecksumMismatch    the file's sha256 is not the catalog's: the part is deleted
    ├── NoDiskSpace             not enough free space (checked first, and ENOSPC)
    ├── NoPermission            a file or directory we must write is not writable
    ├── PortBusy                the port asked for is already taken
    ├── RelayUnreachable        `serve` cannot reach the relay
    ├── ServeError              the model server did not start or died
    └── NotRunning              `stop`/`test`/`logs` named a model that is not running

Each carries a `kind` (a short stable name) for ``--json`` output.
"""

__all__ = [
    "CatalogError",
    "ChecksumMismatch",
    "DownloadError",
    "DownloadInterrupted",
    "LlamafileError",
    "NoDiskSpace",
    "NoPermission",
    "NotRunning",
    "PortBusy",
    "RelayUnreachable",
    "ServeError",
    "UnknownModel",
]


class LlamafileError(Exception):
    """Root of the errors of `agent llamafile`.

    Attributes:
        message: One line for the operator.
        kind: A short stable name for scripts (``--json``).
    """

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CatalogError(LlamafileError):
    """A catalog is invalid, or its URL could not be fetched."""

    kind = "catalog"


class UnknownModel(LlamafileError):
    """No catalog entry or downloaded file has that name."""

    kind = "unknown_model"


class DownloadError(LlamafileError):
    """A download failed."""

    kind = "download"


class DownloadInterrupted(DownloadError):
    """The transfer broke off; what arrived is kept in the `.part` file."""

    kind = "download_interrupted"


class ChecksumMismatch(DownloadError):
    """The downloaded bytes do not hash to the catalog's sha256; the part was deleted."""

    kind = "checksum_mismatch"


class NoDiskSpace(LlamafileError):
    """Not enough free disk space."""

    kind = "no_disk_space"


class NoPermission(LlamafileError):
    """A path we must write (or execute) is not allowed to us."""

    kind = "no_permission"


class PortBusy(LlamafileError):
    """The port is already in use."""

    kind = "port_busy"


class RelayUnreachable(LlamafileError):
    """The relay does not answer."""

    kind = "relay_unreachable"


class ServeError(LlamafileError):
    """The model server failed to start, or exited."""

    kind = "serve"


class NotRunning(LlamafileError):
    """The model is not running."""

    kind = "not_running"
