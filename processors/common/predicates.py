"""Comparisons on values found by dotted paths, shared by event filters and segment rules.

A predicate gets the value and an evaluation context. Time-relative operators
(`older_than`, `newer_than`) read `ctx.now` and tell the context when their
answer will change by itself (`ctx.due`), which is how a profile's next
re-check is scheduled without any new event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.common.errors import TuskError
from processors.common.timeutil import parse_duration_ms, to_ms


class DefinitionError(TuskError, ValueError):
    """A definition that cannot be compiled: where (path of keys) and what was expected."""

    def __init__(self, path: Sequence[str | int], expected: str) -> None:
        self.path = list(path)
        self.expected = expected
        super().__init__(f"at {dotted(self.path)}: expected {expected}")


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(top level)"


@dataclass(slots=True)
class Ctx:
    """One evaluation: the clock, and the earliest future instant an answer depends on.

    One is made per segment and computed trait evaluated (~30 per event at 50 segments):
    slots, and no per-instance dict."""

    now: int
    next_due: int | None = None

    def due(self, at: int) -> None:
        if at > self.now and (self.next_due is None or at < self.next_due):
            self.next_due = at


Predicate = Callable[[Any, Ctx], bool]


def at(obj: Any, key: str) -> Any:
    """obj[key] when obj is a mapping, else None (the exact-dict test first skips the ABC check:
    this runs for every field of every event a rule or trait reads)."""
    return obj.get(key) if type(obj) is dict or isinstance(obj, Mapping) else None


def get_path(obj: Any, path: str) -> Any:
    """obj["a"]["b"] for "a.b"; None when any step is missing."""
    for part in path.split("."):
        obj = at(obj, part)
        if obj is None:
            return None
    return obj


def get_values(obj: Any, path: str) -> list[Any]:
    """Every value at `path`, where `[]` after a key flattens a list: properties.products[].sku."""
    current = [obj]
    for part in path.split("."):
        flatten = part.endswith("[]")
        key = part[:-2] if flatten else part
        nxt: list[Any] = []
        for item in current:
            value = at(item, key)
            if value is None:
                continue
            if flatten:
                if isinstance(value, list):
                    nxt.extend(v for v in value if v is not None)
            else:
                nxt.append(value)
        current = nxt
    return current


def as_number(value: Any) -> float | int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _ordered(op: Callable[[Any, Any], bool], arg: Any) -> Predicate:
    num = as_number(arg) if not isinstance(arg, str) else None

    def check(value: Any, ctx: Ctx) -> bool:
        if value is None:
            return False
        if num is not None:
            v = as_number(value)
            return v is not None and op(v, num)
        if isinstance(arg, str) and isinstance(value, str):
            return op(value, arg)
        return False
    return check


def _equal(arg: Any) -> Predicate:
    def check(value: Any, ctx: Ctx) -> bool:
        if isinstance(value, bool) or isinstance(arg, bool):
            return value is arg
        if isinstance(value, int | float) and isinstance(arg, int | float):
            return bool(value == arg)
        if isinstance(value, str) and isinstance(arg, str):
            return value.casefold() == arg.casefold()
        return bool(value == arg)
    return check


def _age(ms: int, older: bool) -> Predicate:
    """older_than (`older`) or newer_than `ms`: while a time is not older yet, the answer changes
    the instant it becomes so, which is when the profile is due again."""
    def check(value: Any, ctx: Ctx) -> bool:
        t = to_ms(value)
        if t is None:
            return False
        is_older = ctx.now - t > ms
        if not is_older:
            ctx.due(t + ms + 1)
        return is_older == older
    return check


def duration_at(spec: Mapping[str, Any], key: str, path: Sequence[str | int], example: str) -> int | None:
    """The duration `spec[key]` in ms (None when absent); DefinitionError at path/key, showing
    `example` ("30d, 12h or 2w"), when it is not one."""
    if spec.get(key) is None:
        return None
    try:
        return parse_duration_ms(spec[key], key)
    except ValueError:
        raise DefinitionError([*path, key], f"a duration like {example}, got {spec[key]!r}") from None


def _contains(arg: Any) -> Predicate:
    eq = _equal(arg)

    def check(value: Any, ctx: Ctx) -> bool:
        if isinstance(value, str) and isinstance(arg, str):
            return arg.casefold() in value.casefold()
        if isinstance(value, list):
            return any(eq(v, ctx) for v in value)
        return False
    return check


OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "contains",
             "starts_with", "older_than", "newer_than")


def compile_operator(op: str, arg: Any, path: Sequence[str | int]) -> Predicate:
    at = [*path, op]
    if op == "eq":
        return _equal(arg)
    if op == "neq":
        eq = _equal(arg)
        return lambda v, ctx: v is not None and not eq(v, ctx)
    if op in ("gt", "gte", "lt", "lte"):
        if as_number(arg) is None and not isinstance(arg, str):
            raise DefinitionError(at, f"a number or a string to compare with, got {arg!r}")
        fn = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
              "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}[op]
        return _ordered(fn, arg)
    if op in ("in", "not_in"):
        if not isinstance(arg, list):
            raise DefinitionError(at, f"a list of values, got {arg!r}")
        eqs = [_equal(a) for a in arg]
        if op == "in":
            return lambda v, ctx: any(e(v, ctx) for e in eqs)
        return lambda v, ctx: v is not None and not any(e(v, ctx) for e in eqs)
    if op == "exists":
        if not isinstance(arg, bool):
            raise DefinitionError(at, f"true or false, got {arg!r}")
        return lambda v, ctx: (v is not None) is arg
    if op == "contains":
        return _contains(arg)
    if op == "starts_with":
        if not isinstance(arg, str):
            raise DefinitionError(at, f"a string, got {arg!r}")
        low = arg.casefold()
        return lambda v, ctx: isinstance(v, str) and v.casefold().startswith(low)
    if op in ("older_than", "newer_than"):
        try:
            ms = parse_duration_ms(arg, op)
        except ValueError:
            raise DefinitionError(at, f"a duration like 1h, 30d or 2w, got {arg!r}") from None
        return _age(ms, older=op == "older_than")
    raise DefinitionError(path, f"one operator of {list(OPERATORS)}, got {op!r}")


def compile_comparison(node: Mapping[str, Any], subject_keys: Sequence[str],
                       path: Sequence[str | int]) -> Predicate:
    """The one operator in a node like {"trait": "plan", "eq": "pro"} (other keys: `subject_keys`)."""
    ops = [k for k in node if k not in subject_keys]
    unknown = [k for k in ops if k not in OPERATORS]
    if unknown:
        raise DefinitionError([*path, unknown[0]], f"one operator of {list(OPERATORS)}")
    if len(ops) != 1:
        raise DefinitionError(path, f"exactly one operator of {list(OPERATORS)}, got {len(ops)}")
    return compile_operator(ops[0], node[ops[0]], path)


EventFilter = Callable[[Mapping[str, Any], Ctx], bool]


def compile_where(where: Any, path: Sequence[str | int]) -> EventFilter:
    """[{field: properties.currency, eq: USD}, …] → all must hold on the event message."""
    if where is None:
        return lambda msg, ctx: True
    if not isinstance(where, list):
        raise DefinitionError(path, "a list of conditions like {field: properties.x, eq: 1}")
    checks: list[tuple[str, Predicate]] = []
    for i, cond in enumerate(where):
        at = [*path, i]
        if not isinstance(cond, Mapping) or not isinstance(cond.get("field"), str):
            raise DefinitionError(at, "a mapping with `field` (a dotted path) and one operator")
        checks.append((cond["field"], compile_comparison(cond, ("field",), at)))
    return lambda msg, ctx: all(pred(get_path(msg, f), ctx) for f, pred in checks)
