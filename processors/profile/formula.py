"""Arithmetic over computed traits: `orders_total - refunds_total`, `days_since(last_order_at)`.

A small whitelist of Python expression syntax, compiled once into closures.
Missing inputs propagate as None (so does division by zero), the way SQL
NULL does, unless `coalesce` supplies a default.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from processors.common.predicates import Ctx, DefinitionError
from processors.common.timeutil import DAY_MS, HOUR_MS, to_ms

Lookup = Callable[[str, Ctx], Any]
Compiled = Callable[[Lookup, Ctx], Any]


def _since(unit: int) -> Callable[[Ctx, Any], Any]:
    def fn(ctx: Ctx, t: Any) -> Any:
        ms = to_ms(t)
        if ms is None:
            return None
        elapsed = (ctx.now - ms) // unit
        ctx.due(ms + (elapsed + 1) * unit)  # the next time the whole number changes
        return elapsed
    return fn


def _step(ctx: Ctx, x: Any, *edges: Any) -> Any:
    """1 + how many edges x reaches: step(days, 30, 90, 180) ∈ {1, 2, 3, 4}."""
    if x is None:
        return None
    return 1 + sum(1 for e in edges if e is not None and x >= e)


def _none_safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(ctx: Ctx, *args: Any) -> Any:
        if any(a is None for a in args):
            return None
        return fn(*args)
    return call


SINCE_UNITS = {"days_since": DAY_MS, "hours_since": HOUR_MS}

FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{name: _since(unit) for name, unit in SINCE_UNITS.items()},
    "step": _step,
    "coalesce": lambda ctx, *args: next((a for a in args if a is not None), None),
    "min": lambda ctx, *args: min((a for a in args if a is not None), default=None),
    "max": lambda ctx, *args: max((a for a in args if a is not None), default=None),
    "abs": _none_safe(abs),
    "round": _none_safe(lambda x, n=0: round(x, int(n))),
    "floor": _none_safe(math.floor),
    "ceil": _none_safe(math.ceil),
}


def _div(a: Any, b: Any) -> Any:
    return None if b == 0 else a / b


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: _div,
    ast.FloorDiv: lambda a, b: None if b == 0 else a // b,
    ast.Mod: lambda a, b: None if b == 0 else a % b,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def compile_formula(text: str, known: Callable[[str], bool],
                    path: Sequence[str | int]) -> tuple[Compiled, frozenset[str]]:
    """(evaluator, names it reads). `known(name)` says whether a name may be referenced."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise DefinitionError(path, f"an arithmetic expression ({e.msg} at column {e.offset})") from None
    names: set[str] = set()

    def build(node: ast.AST) -> Compiled:
        if isinstance(node, ast.Constant) and (isinstance(node.value, int | float | str)
                                               or node.value is None):
            value = node.value
            return lambda look, ctx: value
        if isinstance(node, ast.Name):
            name = node.id
            if name == "now":
                return lambda look, ctx: ctx.now
            if not known(name):
                raise DefinitionError(path, f"a known computed trait, got {name!r}")
            names.add(name)
            return lambda look, ctx: look(name, ctx)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            fn, left, right = _BINARY[type(node.op)], build(node.left), build(node.right)

            def binop(look: Lookup, ctx: Ctx) -> Any:
                a, b = left(look, ctx), right(look, ctx)
                if a is None or b is None or isinstance(a, str) or isinstance(b, str):
                    return None
                return fn(a, b)
            return binop
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            inner, op = build(node.operand), node.op

            def unary(look: Lookup, ctx: Ctx) -> Any:
                v = inner(look, ctx)
                if isinstance(op, ast.Not):
                    return not v
                if v is None or isinstance(v, str):
                    return None
                return -v if isinstance(op, ast.USub) else v
            return unary
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            cmp, left, right = _COMPARE[type(node.ops[0])], build(node.left), build(node.comparators[0])

            def compare(look: Lookup, ctx: Ctx) -> Any:
                a, b = left(look, ctx), right(look, ctx)
                if a is None or b is None:
                    return None
                try:
                    return cmp(a, b)
                except TypeError:
                    return None
            return compare
        if isinstance(node, ast.BoolOp):
            parts = [build(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda look, ctx: all(p(look, ctx) for p in parts)
            return lambda look, ctx: any(p(look, ctx) for p in parts)
        if isinstance(node, ast.IfExp):
            test, body, orelse = build(node.test), build(node.body), build(node.orelse)
            return lambda look, ctx: body(look, ctx) if test(look, ctx) else orelse(look, ctx)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            if node.func.id not in FUNCTIONS:
                raise DefinitionError(path, f"a function of {sorted(FUNCTIONS)}, got {node.func.id!r}")
            fn_ = FUNCTIONS[node.func.id]
            args = [build(a) for a in node.args]
            return lambda look, ctx: fn_(ctx, *(a(look, ctx) for a in args))
        raise DefinitionError(path, "numbers, computed trait names, + - * / // %, comparisons, "
                                    f"and/or/not, x if c else y and {sorted(FUNCTIONS)}; "
                                    f"got {ast.unparse(node)!r}")

    return build(tree.body), frozenset(names)


Trend = int | None
"""How a value moves as time passes with no new event: 0 constant, 1 never down, -1 never up,
None unknown (it may go both ways, or between a number and None)."""

_SAME_DIRECTION = ("step", "floor", "ceil", "round", "min", "max")  # nondecreasing in each argument


def _joint(*trends: Trend) -> Trend:
    """The trend of a sum of parts moving with these trends."""
    moving = {t for t in trends if t != 0}
    if None in moving or len(moving) > 1:
        return None
    return moving.pop() if moving else 0


def trend(text: str, trend_of: Mapping[str, Trend]) -> Trend:
    """The trend of a formula (compiled by compile_formula already) from those of the traits it reads.

    Conservative: only sums, differences, scaling by a constant, since-functions of constant
    times and the monotone functions above are followed; anything else that moves is None."""
    def walk(node: ast.AST) -> Trend:
        if isinstance(node, ast.Constant):
            return 0
        if isinstance(node, ast.Name):
            return 1 if node.id == "now" else trend_of.get(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = walk(node.operand)
            return -inner if inner is not None and isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            right = walk(node.right)
            return _joint(walk(node.left), None if right is None else
                          -right if isinstance(node.op, ast.Sub) else right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Div | ast.FloorDiv):
            left, right = walk(node.left), walk(node.right)
            if left == 0 and right == 0:
                return 0
            const = node.right if isinstance(node.op, ast.Div | ast.FloorDiv) else \
                node.right if right == 0 else node.left
            moving = left if const is node.right else right
            if not (isinstance(const, ast.Constant) and isinstance(const.value, int | float)) \
                    or moving is None or const.value == 0:
                return None
            return moving if const.value > 0 else -moving
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [walk(a) for a in node.args]
            if node.func.id in SINCE_UNITS and len(args) == 1:
                return 1 if args[0] == 0 else None
            if node.func.id == "step":  # step(x, edges…): nondecreasing in x for constant edges
                return args[0] if args and all(a == 0 for a in args[1:]) else None
            if node.func.id in _SAME_DIRECTION:
                return _joint(*args)
            return 0 if all(a == 0 for a in args) else None
        parts = [walk(child) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]
        return 0 if all(p == 0 for p in parts) else None
    return walk(ast.parse(text, mode="eval").body)


def clock_of(text: str) -> tuple[str, int] | None:
    """(trait, unit in ms) when the formula is exactly `days_since(trait)` or `hours_since(trait)`:
    its value is then the whole units elapsed since the trait's instant."""
    node = ast.parse(text, mode="eval").body
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SINCE_UNITS \
            and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.Name) \
            and node.args[0].id != "now":
        return node.args[0].id, SINCE_UNITS[node.func.id]
    return None


def evaluate(compiled: Compiled, values: Mapping[str, Any], ctx: Ctx) -> Any:
    """For tests: evaluate against fixed values."""
    return compiled(lambda name, _ctx: values.get(name), ctx)
