"""argparse ``type=`` converters shared by the subcommands: one clear message per bad value."""

from __future__ import annotations

import argparse
import math

#: the largest whole number a count or id may be (SQLite's INTEGER, a C int64)
MAX_INT = 2**63 - 1


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is int and abs(value) > MAX_INT:
        raise argparse.ArgumentTypeError(f"{text!r} is too large (at most {MAX_INT})")
    if kind is float and not math.isfinite(value):  # nan, inf, 1e999
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def whole_number(text: str) -> int:
    """Any whole number that fits in 64 bits (a seed, an index)."""
    return int(_number(text, int))


def positive_int(text: str) -> int:
    """A whole number ≥ 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """A whole number ≥ 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def non_negative_float(text: str) -> float:
    """A number ≥ 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def probability(text: str) -> float:
    """A number from 0 to 1 (top-p)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 0 to 1")
    return value
