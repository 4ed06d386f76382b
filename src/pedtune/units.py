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
