"""Partial aggregates and event-time buckets, as JSON-ready values.

A partial aggregate summarises some events; combine() joins two partials, so
aggregates can be kept per time bucket, merged when two profiles merge, and
re-read over any window. combine() is commutative and associative; first/last
break ties by messageId so the result never depends on arrival order.

Buckets: {"<start ms>": [size ms, partial]}. Sizes are powers of two (in ms)
and starts are multiples of their size, so two buckets are always nested or
disjoint. A new event gets a 1 ms bucket: exact windows, until a profile has
more than `cap` buckets for one aggregate; then the oldest are coarsened
(pairs folded into their parent), so memory stays bounded and only the
oldest events lose time resolution. Late events land in the bucket of their
own event time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from processors.common.predicates import as_number

Partial = Any
Buckets = dict[str, list[Any]]

AGGREGATES = ("count", "sum", "min", "max", "avg", "first", "last", "most_frequent", "distinct_count")
NUMERIC = frozenset({"sum", "min", "max", "avg"})
MAX_KEYS = 1000
"""most_frequent / distinct_count keep at most this many distinct values per partial."""


def _key(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _trim(counts: dict[str, Any]) -> dict[str, Any]:
    if len(counts) <= MAX_KEYS:
        return counts
    keep = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:MAX_KEYS]
    return dict(keep)


def single(agg: str, ts: int, mid: str, value: Any) -> Partial:
    """The partial of one observation (value is ignored by count)."""
    if agg == "count":
        return 1
    if agg in NUMERIC:
        num = as_number(value)
        if num is None:
            return None
        return [1, num] if agg == "avg" else num
    if agg in ("first", "last"):
        return [ts, mid, value]
    if agg == "most_frequent":
        return {_key(value): [1, value]}
    if agg == "distinct_count":
        return {_key(value): 1}
    raise ValueError(f"unknown aggregate {agg!r}")


def combine(agg: str, a: Partial, b: Partial) -> Partial:
    if a is None:
        return b
    if b is None:
        return a
    if agg in ("count", "sum"):
        return a + b
    if agg == "min":
        return min(a, b)
    if agg == "max":
        return max(a, b)
    if agg == "avg":
        return [a[0] + b[0], a[1] + b[1]]
    if agg == "first":
        return a if (a[0], a[1]) <= (b[0], b[1]) else b
    if agg == "last":
        return a if (a[0], a[1]) >= (b[0], b[1]) else b
    if agg == "most_frequent":
        out = dict(a)
        for k, (n, v) in b.items():
            out[k] = [out[k][0] + n, v] if k in out else [n, v]
        return _trim(out)
    if agg == "distinct_count":
        return _trim_distinct({**a, **b})
    raise ValueError(f"unknown aggregate {agg!r}")


def _trim_distinct(keys: dict[str, int]) -> dict[str, int]:
    if len(keys) <= MAX_KEYS:
        return keys
    return {k: 1 for k in sorted(keys)[:MAX_KEYS]}


def result(agg: str, partial: Partial) -> Any:
    """The user-facing value; count/sum/distinct_count of nothing is 0, the others None."""
    if partial is None:
        return 0 if agg in ("count", "sum", "distinct_count") else None
    if agg in ("count", "sum", "min", "max"):
        return partial
    if agg == "avg":
        return partial[1] / partial[0] if partial[0] else None
    if agg in ("first", "last"):
        return partial[2]
    if agg == "most_frequent":
        if not partial:
            return None
        best = min(partial.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return best[1][1]
    if agg == "distinct_count":
        return len(partial)
    raise ValueError(f"unknown aggregate {agg!r}")


def fold(agg: str, partials: Iterable[Partial]) -> Partial:
    out: Partial = None
    for p in partials:
        out = combine(agg, out, p)
    return out


# --- buckets -------------------------------------------------------------------------------


def _container(buckets: Buckets, ts: int) -> str | None:
    for size in {b[0] for b in buckets.values()}:
        key = str(ts - ts % size)
        hit = buckets.get(key)
        if hit is not None and hit[0] == size:
            return key
    return None


Combine = Callable[[Partial, Partial], Partial]


def _coarsen(buckets: Buckets, cap: int, join: Combine) -> None:
    while len(buckets) > cap:
        oldest = min(buckets, key=int)
        start, size = int(oldest), buckets[oldest][0] * 2
        parent = start - start % size
        inside = [k for k in buckets if parent <= int(k) < parent + size]
        partial = fold_with(join, (buckets.pop(k)[1] for k in sorted(inside, key=int)))
        buckets[str(parent)] = [size, partial]


def fold_with(join: Combine, partials: Iterable[Partial]) -> Partial:
    out: Partial = None
    for p in partials:
        out = join(out, p)
    return out


def bucket_add(buckets: Buckets, ts: int, partial: Partial, join: Combine, cap: int) -> None:
    """Fold `partial` into the bucket holding `ts` (in place)."""
    key = _container(buckets, ts)
    if key is None:
        buckets[str(ts)] = [1, partial]
        _coarsen(buckets, cap, join)
    else:
        buckets[key][1] = join(buckets[key][1], partial)


def bucket_merge(a: Buckets, b: Buckets, join: Combine, cap: int) -> Buckets:
    """Both bucket sets as one (neither input changed)."""
    out: Buckets = {k: [v[0], v[1]] for k, v in a.items()}
    for key in sorted(b, key=int):
        size, partial = b[key]
        start = int(key)
        into = _container(out, start)
        if into is not None and out[into][0] >= size:
            out[into][1] = join(out[into][1], partial)
            continue
        finer = [k for k in out if start <= int(k) < start + size]
        for k in sorted(finer, key=int):
            partial = join(partial, out.pop(k)[1])
        out[key] = [size, partial]
    _coarsen(out, cap, join)
    return out


def bucket_prune(buckets: Buckets, before: int) -> None:
    """Drop buckets that end at or before `before` (in place)."""
    for k in [k for k, v in buckets.items() if int(k) + v[0] <= before]:
        del buckets[k]


def newest_start(buckets: Buckets) -> int | None:
    return max((int(k) for k in buckets), default=None)
