"""Numbers as short text: counts in SI prefixes, byte sizes, what a timing was measured with.

Plain strings, no rich: the commands layer writes them into result tables and presentation into
its own, so they live below both.
"""

from __future__ import annotations

from typing import Any


def si(n: float, unit: str = "") -> str:
    """1_814_073_344 -> '1.81 G', 272_474 -> '272.5 k': a count in SI prefixes for tables."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.{2 if value < 100 else 1}f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def size_text(nbytes: float) -> str:
    """Bytes in decimal units: '9.6 kB', '1.23 GB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def timing_note(timing: dict[str, Any]) -> str:
    """'cpu, 2 threads, float32, channels_last': what a latency was measured with."""
    return (
        f"{timing['device']}, {timing['threads']} thread{'s' if timing['threads'] != 1 else ''}, "
        f"{timing['dtype']}, {timing['memory_format']}"
    )
