"""Write flow control shared by the transports: asyncio's water marks."""
from __future__ import annotations

DEFAULT_HIGH_WATER = 64 * 1024


def water_marks(high: int | None = None, low: int | None = None) -> tuple[int, int]:
    """(high, low) as set_write_buffer_limits() takes them: high defaults to 64 KiB (or
    4 * low), low to high // 4; ValueError unless high >= low >= 0."""
    if high is None:
        high = DEFAULT_HIGH_WATER if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low
