"""Reward templates: parse LLM-written reward code against an AST allow-list, then validate it.

A template is Python source with exactly two top-level statements (plus an optional docstring and
comments)::

    PARAMETERS = [
        {'name': 'w_reach', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log',
         'meaning': 'weight of the approach term'},
    ]

    def reward(f, p):
        reach = -p['w_reach'] * f['ee_block_dist']
        return reach, {'reach': reach}

``f`` maps feature names (``selfalign_core.features.FEATURE_NAMES``) to batched arrays
(scalars ``(B,)``, vectors ``(B, 3)``); ``p`` maps parameter names to floats; ``np`` is a namespace
holding only ``ALLOWED_NUMPY``. ``reward`` returns ``(total (B,), {term name: (B,)})``.

``parse_template`` checks the source statically (no code runs) and raises ``TemplateError`` whose
text names the line, the rule broken and a fix an LLM can act on; the repair loop feeds it back
verbatim. ``sandbox.validate_template`` adds a trial run in a resource-limited subprocess
(``selfalign_reward.sandbox``); every later evaluation, in any process, runs the code rewritten
by ``selfalign_reward.meter``, which bounds its time and memory. Nothing from an LLM is executed
any other way.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
import hashlib
import math
from pathlib import Path

from selfalign_core.features import FEATURE_NAMES

#: numpy functions a template may call as ``np.<name>`` (``linalg.norm`` as ``np.linalg.norm``).
ALLOWED_NUMPY: tuple[str, ...] = (
    'abs', 'clip', 'exp', 'log', 'log1p', 'sqrt', 'tanh', 'minimum', 'maximum', 'where',
    'linalg.norm', 'sum', 'mean', 'square', 'sign', 'min', 'max', 'ones_like', 'zeros_like',
    'full_like', 'logical_and', 'logical_or', 'logical_not', 'heaviside', 'sin', 'cos',
    'arctan2', 'hypot', 'floor', 'ceil', 'round', 'expm1',
)
#: numpy constants a template may read as ``np.<name>``.
ALLOWED_NUMPY_CONSTANTS: tuple[str, ...] = ('pi', 'e')
#: Builtins a template may call.
SAFE_BUILTINS: tuple[str, ...] = ('abs', 'min', 'max', 'float', 'int', 'bool', 'round')
#: Scales a parameter may have: the MH random walk runs in log space or logit space.
SCALES: tuple[str, ...] = ('log', 'linear')
PARAM_KEYS: tuple[str, ...] = ('name', 'init', 'lower', 'upper', 'scale', 'meaning')
#: Directory of the reference templates shipped with the package (one ``<task>.py`` per task).
REFERENCE_DIR = Path(__file__).resolve().parent / 'templates'

_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd,
           ast.BitOr, ast.BitXor)
_UNARY = (ast.UAdd, ast.USub, ast.Not, ast.Invert)
_CMPOPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_FORBIDDEN_STMT_FIX = {
    ast.Import: ('imports are not allowed',
                 'delete the import; `np` (allow-listed numpy functions) is already available'),
    ast.ImportFrom: ('imports are not allowed',
                     'delete the import; `np` (allow-listed numpy functions) is already '
                     'available'),
    ast.While: ('while loops are not allowed',
                'write the reward with vectorised numpy expressions over the batch'),
    ast.For: ('for loops are not allowed',
              'write the reward with vectorised numpy expressions over the batch'),
    ast.Global: ('global/nonlocal statements are not allowed', 'use local variables only'),
    ast.Nonlocal: ('global/nonlocal statements are not allowed', 'use local variables only'),
    ast.ClassDef: ('class definitions are not allowed', 'write plain expressions in reward()'),
    ast.FunctionDef: ('nested function definitions are not allowed',
                      'inline the computation in reward()'),
    ast.AsyncFunctionDef: ('async functions are not allowed', 'define only `def reward(f, p)`'),
    ast.With: ('with statements are not allowed', 'remove the with block'),
    ast.Try: ('try/except is not allowed', 'remove it; use np.where/np.clip to guard values'),
    ast.Raise: ('raise is not allowed', 'remove it; return a finite reward for every input'),
    ast.Delete: ('del is not allowed', 'remove the del statement'),
    ast.Assert: ('assert is not allowed', 'remove the assert'),
}
_FORBIDDEN_EXPR_FIX = {
    ast.Lambda: ('lambda is not allowed', 'inline the expression'),
    ast.ListComp: ('comprehensions are not allowed', 'use vectorised numpy expressions'),
    ast.SetComp: ('comprehensions are not allowed', 'use vectorised numpy expressions'),
    ast.DictComp: ('comprehensions are not allowed', 'write the terms dict literally'),
    ast.GeneratorExp: ('generator expressions are not allowed',
                       'use vectorised numpy expressions'),
    ast.Yield: ('yield is not allowed', 'return (total, terms)'),
    ast.YieldFrom: ('yield is not allowed', 'return (total, terms)'),
    ast.Await: ('await is not allowed', 'remove it'),
    ast.NamedExpr: ('the walrus operator := is not allowed', 'use a plain assignment'),
    ast.Starred: ('starred arguments (*x, **x) are not allowed', 'pass arguments explicitly'),
    ast.JoinedStr: ('f-strings are not allowed', 'use plain string constants'),
    ast.Set: ('set literals are not allowed', 'use a tuple or list'),
}


class TemplateError(ValueError):
    """A reward template broke a rule; ``str()`` names the line, the rule and the fix."""

    def __init__(self, line: int | None, rule: str, fix: str) -> None:
        self.line = line
        self.rule = rule
        self.fix = fix
        where = f'line {line}' if line else 'template'
        super().__init__(f'{where}: {rule}. Fix: {fix}.')


@dataclass(frozen=True)
class ParamSpec:
    """One tunable parameter of a reward template.

    ``scale`` is 'log' (positive; MH walks in log space) or 'linear' (bounded; MH walks in logit
    space of the normalised position in [lower, upper]).
    """

    name: str
    init: float
    lower: float
    upper: float
    scale: str
    meaning: str

    def contains(self, value: float) -> bool:
        """True when ``value`` is finite and inside [lower, upper]."""
        return math.isfinite(value) and self.lower <= value <= self.upper


@dataclass(frozen=True)
class RewardTemplate:
    """A parsed reward template: the full source, its parameter table, sha256 hex of the source."""

    code: str
    params: tuple[ParamSpec, ...]
    sha256: str

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.params)

    def initial_theta(self) -> dict[str, float]:
        """The parameters' initial values, name -> float."""
        return {s.name: float(s.init) for s in self.params}

    def spec(self, name: str) -> ParamSpec:
        """The ParamSpec called ``name``; KeyError lists the valid names."""
        for s in self.params:
            if s.name == name:
                return s
        raise KeyError(f'unknown reward parameter {name!r}; parameters are {self.param_names}')


def code_sha256(code: str) -> str:
    """Hex sha256 of the UTF-8 source."""
    return hashlib.sha256(code.encode('utf-8')).hexdigest()


def _parse_params(node: ast.Assign) -> tuple[ParamSpec, ...]:
    line = node.lineno
    try:
        table = ast.literal_eval(node.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise TemplateError(line, 'PARAMETERS must be a literal list of dicts',
                            'write PARAMETERS = [{...}, ...] with only numbers and strings, '
                            'no expressions or names') from None
    if not isinstance(table, list | tuple) or not table:
        raise TemplateError(line, 'PARAMETERS must be a non-empty list of dicts',
                            "give at least one parameter, e.g. [{'name': 'w', 'init': 1.0, "
                            "'lower': 0.1, 'upper': 10.0, 'scale': 'log', 'meaning': '...'}]")
    specs: list[ParamSpec] = []
    for k, entry in enumerate(table):
        where = f'PARAMETERS[{k}]'
        if not isinstance(entry, dict):
            raise TemplateError(line, f'{where} is not a dict',
                                f'give a dict with keys {PARAM_KEYS}')
        missing = [key for key in PARAM_KEYS if key not in entry]
        extra = [key for key in entry if key not in PARAM_KEYS]
        if missing or extra:
            raise TemplateError(line, f'{where} has missing keys {missing} / unknown keys {extra}',
                                f'use exactly the keys {PARAM_KEYS}')
        name = entry['name']
        if not isinstance(name, str) or not name.isidentifier() or name.startswith('_'):
            raise TemplateError(line, f'{where} name {name!r} is not a valid identifier',
                                'use a snake_case name such as w_push, not starting with _')
        if name in {s.name for s in specs}:
            raise TemplateError(line, f'parameter name {name!r} is used twice',
                                'give every parameter a unique name')
        nums = {}
        for key in ('init', 'lower', 'upper'):
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise TemplateError(line, f'parameter {name!r}: {key} = {v!r} is not a finite '
                                    'number', f'give {key} as a number such as 1.0')
            nums[key] = float(v)
        scale = entry['scale']
        if scale not in SCALES:
            raise TemplateError(line, f'parameter {name!r}: scale {scale!r} is not one of '
                                f'{SCALES}', "use 'log' for positive weights/thresholds spanning "
                                "orders of magnitude, 'linear' otherwise")
        if not nums['lower'] < nums['upper']:
            raise TemplateError(line, f'parameter {name!r}: lower {nums["lower"]} is not below '
                                f'upper {nums["upper"]}', 'make lower < upper')
        if scale == 'log' and nums['lower'] <= 0:
            raise TemplateError(line, f'parameter {name!r}: scale log needs lower > 0 (got '
                                f'{nums["lower"]})', "raise lower above 0 or use scale 'linear'")
        if not nums['lower'] <= nums['init'] <= nums['upper']:
            raise TemplateError(line, f'parameter {name!r}: init {nums["init"]} is outside '
                                f'[{nums["lower"]}, {nums["upper"]}]',
                                'choose init inside the range or widen the range')
        if not isinstance(entry['meaning'], str):
            raise TemplateError(line, f'parameter {name!r}: meaning is not a string',
                                'describe the parameter in words, with its unit')
        specs.append(ParamSpec(name, nums['init'], nums['lower'], nums['upper'], scale,
                               entry['meaning']))
    return tuple(specs)


class _BodyChecker(ast.NodeVisitor):
    """Walks the body of ``reward`` and raises TemplateError on the first forbidden construct."""

    def __init__(self, param_names: set[str]) -> None:
        self.param_names = param_names
        self.locals: set[str] = set()

    def fail(self, node: ast.AST, rule: str, fix: str) -> None:
        raise TemplateError(getattr(node, 'lineno', None), rule, fix)

    def generic_visit(self, node: ast.AST) -> None:
        allowed = (ast.Assign, ast.AugAssign, ast.Return, ast.If, ast.Expr, ast.Pass,
                   ast.IfExp, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call,
                   ast.keyword, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Slice,
                   ast.Load, ast.Store, ast.And, ast.Or, *_BINOPS, *_UNARY, *_CMPOPS)
        for kinds, table in ((ast.stmt, _FORBIDDEN_STMT_FIX), (ast.expr, _FORBIDDEN_EXPR_FIX)):
            if isinstance(node, kinds) and type(node) in table:
                self.fail(node, *table[type(node)])
        if isinstance(node, ast.Compare) and any(isinstance(o, ast.Is | ast.IsNot | ast.In
                                                            | ast.NotIn) for o in node.ops):
            self.fail(node, 'is / in comparisons are not allowed', 'compare numbers with < > ==')
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            self.fail(node, 'the @ operator is not allowed', 'use elementwise * and np.sum')
        if not isinstance(node, allowed):
            self.fail(node, f'{type(node).__name__} is not allowed in a reward',
                      'use assignments, if/else, arithmetic, comparisons and np.<fn> calls only')
        super().generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, int | float | str | bool | type(None)):
            self.fail(node, f'constant {node.value!r} of type {type(node.value).__name__} is '
                      'not allowed', 'use numbers, strings, True/False/None')

    def _assign_target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._assign_target(elt)
            return
        if not isinstance(target, ast.Name):
            self.fail(target, 'only plain local names can be assigned to',
                      'assign to a new local variable, e.g. `dist = f["ee_block_dist"]`; '
                      'f, p and arrays are read-only')
        if target.id in ('f', 'p', 'np') or target.id in SAFE_BUILTINS or \
                target.id.startswith('_'):
            self.fail(target, f'the name {target.id!r} cannot be assigned to',
                      'choose another local variable name (not f, p, np, a builtin or _name)')
        self.locals.add(target.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self._assign_target(t)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if not isinstance(node.target, ast.Name) or node.target.id not in self.locals:
            self.fail(node, 'augmented assignment (+=) only to an existing local variable',
                      'assign the variable first, e.g. `total = reach` then `total += touch`')
        self.visit(node.value)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in ('f', 'p'):
            self.fail(node, f'`{node.id}` may only be indexed with a string constant',
                      f"write {node.id}['name'] directly; do not pass {node.id} around or "
                      'iterate over it')
        if node.id == 'np':
            self.fail(node, '`np` may only be used as np.<function>',
                      f'call one of the allowed numpy functions: {", ".join(ALLOWED_NUMPY)}')
        if node.id in SAFE_BUILTINS or node.id in self.locals:
            return
        if node.id.startswith('_'):
            self.fail(node, f'names starting with _ are not allowed ({node.id!r})',
                      'use plain local variable names')
        self.fail(node, f'unknown name {node.id!r} (not a local variable, f, p, np or an allowed '
                  'builtin)', f'assign {node.id!r} before using it; allowed builtins are '
                  f'{", ".join(SAFE_BUILTINS)}; features are read as f["name"], parameters as '
                  'p["name"]')

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in ('f', 'p'):
            which = node.value.id
            key = node.slice
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                self.fail(node, f'{which}[...] must be indexed with a string constant',
                          f"write {which}['name'] with the name spelled out")
            valid = FEATURE_NAMES if which == 'f' else tuple(sorted(self.param_names))
            if key.value not in valid:
                what = 'feature' if which == 'f' else 'parameter'
                self.fail(node, f'unknown {what} {which}[{key.value!r}]',
                          f'use one of the {what}s: {", ".join(valid)}'
                          + ('' if which == 'f' else ' (or add it to PARAMETERS)'))
            return
        self.visit(node.value)
        self.visit(node.slice)

    def _numpy_name(self, node: ast.Attribute) -> str | None:
        """'clip' for np.clip, 'linalg.norm' for np.linalg.norm, else None."""
        if isinstance(node.value, ast.Name) and node.value.id == 'np':
            return node.attr
        if (isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name)
                and node.value.value.id == 'np'):
            return f'{node.value.attr}.{node.attr}'
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith('_'):
            self.fail(node, f'attributes starting with _ are not allowed (.{node.attr})',
                      'use only np.<function> from the allow-list; no dunder access')
        name = self._numpy_name(node)
        if name in ALLOWED_NUMPY_CONSTANTS:
            return
        if name is None:
            self.fail(node, f'attribute access .{node.attr} is not allowed (only np.<function>)',
                      'use numpy functions instead of methods, e.g. np.sum(x, axis=-1) instead of '
                      'x.sum(-1), 1.0 * (x > 0) instead of (x > 0).astype(float), '
                      "f['ee_pos'][:, 2] for a component")
        self.fail(node, f'np.{name} is used without calling it or is not allowed',
                  f'call one of: {", ".join("np." + n for n in ALLOWED_NUMPY)}')

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            name = self._numpy_name(func)
            if func.attr.startswith('_'):
                self.visit_Attribute(func)
            if name is None:
                self.visit_Attribute(func)
            if name not in ALLOWED_NUMPY:
                self.fail(node, f'np.{name} is not an allowed numpy function',
                          f'use one of: {", ".join("np." + n for n in ALLOWED_NUMPY)}')
        elif isinstance(func, ast.Name):
            if func.id not in SAFE_BUILTINS:
                self.fail(node, f'calling {func.id!r} is not allowed',
                          f'call only np.<function> from the allow-list or the builtins '
                          f'{", ".join(SAFE_BUILTINS)}; no I/O, eval, exec, getattr or imports')
        else:
            self.fail(node, 'only direct calls of np.<function> or allowed builtins are allowed',
                      'call functions by name, e.g. np.clip(x, 0.0, 1.0)')
        for arg in node.args:
            self.visit(arg)
        for kw in node.keywords:
            if kw.arg is None:
                self.fail(node, '**kwargs is not allowed', 'pass keyword arguments explicitly')
            self.visit(kw.value)


MAX_AST_NODES = 4000
"""Most syntax-tree nodes accepted: without loops each node runs at most once per evaluation,
so this bounds the Python-level operations of one evaluation (``meter`` bounds their sizes)."""
MAX_AST_DEPTH = 100
"""Deepest syntax tree accepted: everything after parsing (the checks, compile, evaluation)
walks the tree recursively, so a 1,500-term chain of ``+`` would hit Python's recursion limit."""


def _ast_depth(tree: ast.AST) -> int:
    """Depth of a syntax tree, measured without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parse_template(source: str) -> RewardTemplate:
    """Check ``source`` against the template rules without running it.

    Raises ``TemplateError`` (line, rule, fix) on the first problem found.
    """
    if not isinstance(source, str) or not source.strip():
        raise TemplateError(None, 'the template is empty',
                            'write PARAMETERS = [...] and def reward(f, p): ...')
    if len(source) > 50_000:
        raise TemplateError(None, f'the template is {len(source)} characters long (limit '
                            '50000)', 'write a shorter reward function')
    try:
        tree = ast.parse(source, mode='exec')
    except SyntaxError as exc:
        raise TemplateError(exc.lineno, f'syntax error: {exc.msg}',
                            'fix the Python syntax on that line') from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise TemplateError(None, f'the source cannot be parsed ({exc})',
                            'write plain Python source') from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_AST_NODES:
        raise TemplateError(None, f'the code has {nodes} syntax nodes (limit {MAX_AST_NODES})',
                            'write a shorter reward: a few terms, each a short numpy expression')
    depth = _ast_depth(tree)
    if depth > MAX_AST_DEPTH:
        raise TemplateError(None, f'the code is nested {depth} levels deep (limit '
                            f'{MAX_AST_DEPTH}): a very long chained expression or deep nesting',
                            'compute in named steps (a = ...; b = a + ...) instead of one '
                            'expression')
    params_node = None
    reward_node = None
    for k, stmt in enumerate(tree.body):
        if (k == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)):
            continue  # module docstring
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == 'PARAMETERS'):
            if params_node is not None:
                raise TemplateError(stmt.lineno, 'PARAMETERS is defined twice',
                                    'define PARAMETERS exactly once')
            params_node = stmt
            continue
        if isinstance(stmt, ast.FunctionDef) and stmt.name == 'reward':
            if reward_node is not None:
                raise TemplateError(stmt.lineno, 'reward is defined twice',
                                    'define def reward(f, p) exactly once')
            reward_node = stmt
            continue
        kind = type(stmt)
        if kind in _FORBIDDEN_STMT_FIX and kind is not ast.FunctionDef:
            raise TemplateError(stmt.lineno, *_FORBIDDEN_STMT_FIX[kind])
        raise TemplateError(stmt.lineno, f'top-level {kind.__name__} statement is not allowed',
                            'the template holds only PARAMETERS = [...] and def reward(f, p); '
                            'move constants into PARAMETERS or inside reward()')
    if params_node is None:
        raise TemplateError(None, 'PARAMETERS is missing',
                            "add PARAMETERS = [{'name': ..., 'init': ..., 'lower': ..., "
                            "'upper': ..., 'scale': 'log' or 'linear', 'meaning': ...}, ...]")
    if reward_node is None:
        raise TemplateError(None, 'def reward(f, p) is missing',
                            'define def reward(f, p) returning (total, terms_dict)')
    params = _parse_params(params_node)
    args = reward_node.args
    if (reward_node.decorator_list or args.posonlyargs or args.kwonlyargs or args.vararg
            or args.kwarg or args.defaults or [a.arg for a in args.args] != ['f', 'p']
            or reward_node.returns or any(a.annotation for a in args.args)):
        raise TemplateError(reward_node.lineno, 'the signature must be exactly def reward(f, p)',
                            'remove decorators, annotations, defaults and extra arguments')
    checker = _BodyChecker({s.name for s in params})
    body = reward_node.body
    for stmt in body:
        checker.visit(stmt)
    if not any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(reward_node)):
        raise TemplateError(reward_node.lineno, 'reward() has no return statement',
                            'end with `return total, {"term": term, ...}`')
    return RewardTemplate(code=source, params=params, sha256=code_sha256(source))


def reference_template_source(task: str) -> str:
    """Source of the shipped reference template for ``task`` (templates/<task>.py)."""
    path = REFERENCE_DIR / f'{task}.py'
    if not path.is_file():
        have = sorted(p.stem for p in REFERENCE_DIR.glob('*.py'))
        raise FileNotFoundError(f'no reference template for task {task!r} at {path}; '
                                f'available: {have}')
    return path.read_text(encoding='utf-8')


def load_reference_template(task: str) -> RewardTemplate:
    """Parse the shipped reference template for ``task`` (static checks only)."""
    return parse_template(reference_template_source(task))
