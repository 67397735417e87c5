"""Byte counts for people (kept apart so the CLI can show sizes without loading httpx)."""

__all__ = ["human_bytes"]


def human_bytes(count: float) -> str:
    """``1.2 GB`` style (powers of 1000, like download pages)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
