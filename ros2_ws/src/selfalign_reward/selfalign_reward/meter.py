"""Bounded in-process evaluation of LLM-written reward code (pure numpy; no rclpy).

Why this bounds time and memory: the template grammar (``template.parse_template``) has no loops,
comprehensions, function definitions, recursion or imports, and at most ``MAX_AST_NODES`` nodes,
so one evaluation executes each operation of the source at most once. What is left unbounded is
the cost of a single operation: NumPy broadcasting builds outer products (``(B, 1) * (B,)`` is
B x B), Python integers grow without limit (``a = a * a`` twenty times), and sequences multiply.

``compile_metered`` rewrites every operation that can allocate (arithmetic, comparisons, unary
operators, calls, subscripts) into a call of a ``Meter``, which computes the size of the result
from the operands' shapes *before* the operation runs and refuses it (``RewardBoundError``) when

* the result would hold more than ``OP_FACTOR x base`` elements, or
* the results of this evaluation together would hold more than ``BUDGET_FACTOR x base``,

where ``base`` is the size of the largest array a correct template can produce for the call:
(largest feature array) x (largest parameter array) -- (B, 3) for B rows and scalar θ, or
(C, N*T, 3) for C parameter vectors over N*T steps (batched Metropolis–Hastings). Python ints
are turned into floats before arithmetic, and arithmetic on strings, lists or dicts is refused.
So whatever the data and whatever θ (including θ that takes a branch the trial never ran),
an evaluation does at most MAX_AST_NODES Python-level operations and O(BUDGET_FACTOR x base)
elementwise work, and holds at most BUDGET_FACTOR x base elements. A correct template uses a
small fraction of it (the reference templates: under 10 x base; ``benchmarks/reward_speed.py``).
Inputs are read-only views (``sandbox.readonly_features``); ``x += y`` is rewritten to
``x = x + y``, so a template never writes into an array it did not create.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
import contextlib
import math
import operator
import threading
from typing import Any

import numpy as np

#: A single result may hold this many times ``base`` elements (stacking up to 16 arrays).
OP_FACTOR = 16
#: All results of one evaluation together may hold this many times ``base`` elements.
BUDGET_FACTOR = 64
#: ``base`` is at least this many elements (tiny batches: a handful of scalars still work).
MIN_BASE = 64
#: Keyword arguments a template may pass to an allowed function (no ``out=``, no ``shape=``).
ALLOWED_KEYWORDS = frozenset({'axis', 'keepdims', 'ord', 'decimals', 'a_min', 'a_max'})
#: Functions whose result has the shape of their first argument.
_LIKE = frozenset({'ones_like', 'zeros_like', 'full_like'})

_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    'Add': operator.add, 'Sub': operator.sub, 'Mult': operator.mul, 'Div': operator.truediv,
    'FloorDiv': operator.floordiv, 'Mod': operator.mod, 'Pow': operator.pow,
    'BitAnd': operator.and_, 'BitOr': operator.or_, 'BitXor': operator.xor,
}
_UNARY: dict[str, Callable[[Any], Any]] = {
    'UAdd': operator.pos, 'USub': operator.neg, 'Not': operator.not_, 'Invert': operator.invert,
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    'Eq': operator.eq, 'NotEq': operator.ne, 'Lt': operator.lt, 'LtE': operator.le,
    'Gt': operator.gt, 'GtE': operator.ge,
}


class RewardBoundError(RuntimeError):
    """An operation of a reward would exceed its size or its evaluation's budget."""


def _shape(x: Any) -> tuple[int, ...]:
    """Shape of an operand without converting it (lists: stacked shape of their elements)."""
    if type(x) is np.ndarray:
        return x.shape
    if type(x) is float:
        return ()
    if isinstance(x, np.ndarray):
        return x.shape
    if x is None or isinstance(x, np.generic | int | float | bool | str):
        return ()
    if isinstance(x, list | tuple):
        inner = [_shape(e) for e in x]
        try:
            return (len(x), *np.broadcast_shapes(*inner)) if inner else (0,)
        except ValueError:  # ragged: bound by the sum of the parts
            return (sum(math.prod(s) for s in inner),)
    if isinstance(x, dict):
        return ()
    raise TypeError(f'{type(x).__name__} values are not allowed in a reward')


def _number(x: Any) -> Any:
    """An arithmetic operand: Python ints become floats (no unbounded integers); only numbers
    and arrays are allowed."""
    t = type(x)
    if t is np.ndarray or t is float or isinstance(x, bool | np.ndarray | np.generic | float):
        return x
    if isinstance(x, int):
        return float(x)
    raise TypeError(f'arithmetic on {type(x).__name__} is not allowed in a reward (use numbers '
                    'and numpy arrays)')


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """np.broadcast_shapes, with the common cases (scalars, equal shapes) first: it is called
    for every operation of every evaluation."""
    out = ()
    for s in shapes:
        if not s or s == out:
            continue
        if not out:
            out = s
            continue
        return np.broadcast_shapes(*shapes)
    return out


class Meter:
    """The operations of metered reward code; limits are per thread, set by ``limits``."""

    slice = staticmethod(slice)  # x[a:b] in metered code: the builtins hold no `slice`

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def limits(self, base: int):
        """Bound the evaluations run inside the block by ``base`` (see the module docstring)."""
        base = max(int(base), MIN_BASE)
        local = self._local
        saved = getattr(local, 'state', None)
        local.state = [OP_FACTOR * base, BUDGET_FACTOR * base, BUDGET_FACTOR * base]
        try:
            yield
        finally:
            local.state = saved

    def used(self) -> int:
        """Elements charged so far inside the current ``limits`` block."""
        op_limit, budget, left = self._local.state
        return budget - left

    def _charge(self, shape: tuple[int, ...], what: str) -> None:
        state = getattr(self._local, 'state', None)
        if state is None:
            raise RewardBoundError('metered reward code ran outside Meter.limits')
        n = math.prod(shape)
        if n > state[0]:
            raise RewardBoundError(
                f'`{what}` would build an array of shape {shape} ({n} elements, limit '
                f'{state[0]}): keep arrays (B,) or (B, 3); do not broadcast a (B, 1) column '
                'against a (B,) row or index with [:, None]')
        state[2] -= n
        if state[2] < 0:
            raise RewardBoundError(
                f'the reward computes more than {state[1]} array elements in one evaluation: '
                'write it with fewer, simpler numpy expressions')

    # -- the operations compile_metered routes through the meter --
    def binop(self, op: str, a: Any, b: Any) -> Any:
        a, b = _number(a), _number(b)
        self._charge(_broadcast(_shape(a), _shape(b)), op)
        return _BINOPS[op](a, b)

    def compare(self, op: str, a: Any, b: Any) -> Any:
        self._charge(_broadcast(_shape(a), _shape(b)), op)
        return _COMPARE[op](a, b)

    def unary(self, op: str, a: Any) -> Any:
        self._charge(_shape(a), op)
        return _UNARY[op](a)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        bad = sorted(set(kwargs) - ALLOWED_KEYWORDS)
        if bad:
            raise TypeError(f'keyword argument(s) {bad} are not allowed in a reward (allowed: '
                            f'{sorted(ALLOWED_KEYWORDS)})')
        name = getattr(fn, '__name__', '')
        shapes = [_shape(a) for a in args]
        if name in _LIKE and shapes:
            out = shapes[0]
        else:
            try:
                out = _broadcast(*shapes)
            except ValueError:  # not elementwise (e.g. a reduction): bounded by its inputs
                out = (sum(_size(s) for s in shapes),)
        self._charge(out, name or 'a call')
        return fn(*args, **kwargs)

    def getitem(self, x: Any, key: Any) -> Any:
        if not isinstance(x, np.ndarray | np.generic):
            return x[key]  # a list, tuple or dict the template built: no allocation
        parts = key if isinstance(key, tuple) else (key,)
        arrays = [k for k in parts if isinstance(k, np.ndarray | list)]
        if len(arrays) > 1:
            raise TypeError('index with at most one array (combine masks with np.logical_and, '
                            'or use np.where)')
        if arrays:
            if any(k is Ellipsis or k is None for k in parts):
                raise TypeError('an array index cannot be combined with ... or None')
            idx = np.asarray(arrays[0])
            axis = next(i for i, k in enumerate(parts) if k is arrays[0])
            if idx.dtype == bool:
                out = (x.size,)
            else:
                rest = x.size // max(1, x.shape[axis]) if axis < x.ndim else x.size
                out = (idx.size * rest,)
            self._charge(out, 'indexing')
        return x[key]


#: The meter every metered reward uses (limits are per thread).
METER = Meter()


class _Rewrite(ast.NodeTransformer):
    """Routes every allocating operation of ``def reward(f, p)`` through ``_m`` (a Meter)."""

    @staticmethod
    def _m(method: str, *args: ast.expr, keywords: list[ast.keyword] | None = None) -> ast.Call:
        return ast.Call(func=ast.Attribute(value=ast.Name('_m', ast.Load()), attr=method,
                                           ctx=ast.Load()),
                        args=list(args), keywords=keywords or [])

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return self._m('binop', ast.Constant(type(node.op).__name__), node.left, node.right)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return self._m('unary', ast.Constant(type(node.op).__name__), node.operand)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        pairs, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            pairs.append(self._m('compare', ast.Constant(type(op).__name__), left, right))
            left = right
        return pairs[0] if len(pairs) == 1 else ast.BoolOp(op=ast.And(), values=pairs)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        return self._m('call', node.func, *node.args, keywords=node.keywords)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id in ('f', 'p'):
            return node  # the inputs: a dict lookup by a constant name
        self.generic_visit(node)
        return self._m('getitem', node.value, self._key(node.slice))

    def _key(self, key: ast.expr) -> ast.expr:
        if isinstance(key, ast.Slice):
            none = ast.Constant(None)
            return ast.Call(func=ast.Attribute(value=ast.Name('_m', ast.Load()), attr='slice',
                                               ctx=ast.Load()),
                            args=[key.lower or none, key.upper or none, key.step or none],
                            keywords=[])
        if isinstance(key, ast.Tuple):
            return ast.Tuple(elts=[self._key(e) for e in key.elts], ctx=ast.Load())
        return key

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        target = ast.Name(node.target.id, ast.Load())  # the parser allows only local names
        value = self._m('binop', ast.Constant(type(node.op).__name__), target, node.value)
        return ast.Assign(targets=[ast.Name(node.target.id, ast.Store())], value=value)


def metered_source_tree(code: str) -> ast.Module:
    """The template's module AST with ``reward``'s body rewritten for the meter."""
    tree = ast.parse(code, mode='exec')
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef) and stmt.name == 'reward':
            tree.body[i] = _Rewrite().visit(stmt)
    return ast.fix_missing_locations(tree)


def base_size(f: dict[str, Any], p: dict[str, Any]) -> int:
    """Largest array a correct template can build from these inputs (module docstring)."""
    largest_f = max((int(np.size(v)) for v in f.values()), default=1)
    largest_p = max((int(np.size(v)) for v in p.values()), default=1)
    return largest_f * max(1, largest_p)


class MeteredReward:
    """``reward(f, p)`` of a template, each call bounded by ``METER.limits(base_size(f, p))``."""

    def __init__(self, fn: Callable[[dict, dict], Any], meter: Meter = METER) -> None:
        self._fn = fn
        self.meter = meter
        #: elements the last call on this thread charged (for calibration and tests)
        self.last_used = 0

    def __call__(self, f: dict[str, Any], p: dict[str, Any]) -> Any:
        with self.meter.limits(base_size(f, p)):
            try:
                return self._fn(f, p)
            finally:
                self.last_used = self.meter.used()
