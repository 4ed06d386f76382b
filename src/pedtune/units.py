"""How a quantity reads in logs and reports: one format per unit, so every place prints it alike."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``42 s``, ``7 min 05 s``, ``3 h 20 min``: what a person reads, at a precision worth reading."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def memory(num_bytes: float) -> str:
    """``812 MiB``, ``3.4 GiB``, ``96 KiB``: binary units, as the budget in params.yaml is written."""
    value = max(0.0, float(num_bytes))
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
