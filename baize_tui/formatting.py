"""Numbers for people: byte sizes and remaining times, formatted one way everywhere."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """A byte count in binary units: ``1536`` -> ``'1.50 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def fmt_eta(seconds: float | None) -> str:
    """A remaining time as ``h:mm:ss`` or ``mm:ss``; ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
