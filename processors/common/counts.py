"""Counters made per record."""

from __future__ import annotations

from collections import Counter
from typing import Any


def empty_counter() -> Counter[Any]:
    """An empty Counter without Counter.__init__ (its update() of nothing): the effects, decisions
    and journey results of every record hold several, and `Counter()` costs ~0.9 µs against
    ~0.25 (timeit)."""
    return Counter.__new__(Counter)
