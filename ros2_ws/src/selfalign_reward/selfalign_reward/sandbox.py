"""Sandbox for LLM-written reward code: restricted globals, output checks, subprocess trial run.

Three layers of defence (docs/design.md "LLM-written code"):

1. ``template.parse_template`` rejects anything outside the AST allow-list before any code runs.
2. ``compile_reward`` compiles the code rewritten by ``selfalign_reward.meter``: every operation
   is size-checked before it runs, so every evaluation -- the trial's and each later one in a
   node's process, at any θ and on any data -- is bounded in time and memory, and inputs are
   read-only views (``readonly_features``).
3. ``trial_run`` executes the parsed template once in a child Python process
   (``python -m selfalign_reward.sandbox``) under ``resource.setrlimit`` CPU-time and
   address-space limits and a wall-clock timeout, on ``sample_features`` (plausible random data),
   and checks the outputs (``check_output``). Only then may ``compile_reward`` load it in the
   caller's process, with ``__builtins__`` reduced to ``template.SAFE_BUILTINS`` and ``np`` a
   namespace holding only ``template.ALLOWED_NUMPY``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
import json
import os
import subprocess
import sys
import types
from typing import Any

import numpy as np

from selfalign_core import features as F
from selfalign_reward.meter import METER, metered_source_tree, MeteredReward, RewardBoundError
from selfalign_reward.template import (
    ALLOWED_NUMPY,
    ALLOWED_NUMPY_CONSTANTS,
    parse_template,
    RewardTemplate,
    SAFE_BUILTINS,
    TemplateError,
)

RewardCallable = Callable[[dict, dict], Any]
#: Random θ inside the ranges the trial run evaluates, besides init, all-lower and all-upper.
TRIAL_RANDOM_THETAS = 8


def numpy_namespace() -> types.SimpleNamespace:
    """A namespace exposing only the allow-listed numpy functions and constants as ``np``."""
    ns = types.SimpleNamespace()
    sub: dict[str, types.SimpleNamespace] = {}
    for name in ALLOWED_NUMPY + ALLOWED_NUMPY_CONSTANTS:
        obj: Any = np
        for part in name.split('.'):
            obj = getattr(obj, part)
        if '.' in name:
            head, tail = name.split('.')
            sub.setdefault(head, types.SimpleNamespace())
            setattr(sub[head], tail, obj)
        else:
            setattr(ns, name, obj)
    for head, space in sub.items():
        setattr(ns, head, space)
    return ns


def restricted_globals() -> dict[str, Any]:
    """Globals for executing template code: safe builtins and the numpy namespace only."""
    return {'__builtins__': {n: getattr(builtins, n) for n in SAFE_BUILTINS},
            'np': numpy_namespace()}


def readonly_features(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A fresh dict of read-only views: LLM code cannot write into the caller's arrays (an
    in-place ``x += ...`` or ``out=f[...]`` raises instead of corrupting replay or MH data)."""
    out = {}
    for name, arr in features.items():
        view = np.asarray(arr).view()
        view.flags.writeable = False
        out[name] = view
    return out


def compile_reward(template: RewardTemplate) -> RewardCallable:
    """Execute a *parsed* template's source in restricted globals; return its ``reward``.

    Call only on templates that passed ``parse_template`` (and, before first use on real data,
    ``validate_template``).
    """
    code = compile(metered_source_tree(template.code), f'<reward {template.sha256[:12]}>',
                   'exec')
    scope = restricted_globals()
    scope['_m'] = METER  # template names cannot start with _: only the rewrite reaches it
    exec(code, scope)  # noqa: S102 - source passed the AST allow-list; operations metered
    fn = scope.get('reward')
    if not callable(fn):
        raise TemplateError(None, 'def reward(f, p) is missing', 'define def reward(f, p)')
    return MeteredReward(fn)


def sample_features(batch: int = 64, seed: int = 0) -> np.ndarray:
    """Plausible random feature rows (B, FEATURE_DIM) float32 for trial runs.

    The end effector is sampled near the block for a third of the rows, with contact forces on a
    third of the rows, so branches that depend on contact or closeness execute.
    """
    rng = np.random.default_rng(seed)
    rest_z = 0.025
    block = np.column_stack([rng.uniform(0.4, 0.7, batch), rng.uniform(-0.2, 0.2, batch),
                             rest_z + np.where(rng.random(batch) < 0.2,
                                               rng.uniform(0, 0.1, batch), 0.0)])
    near = rng.random(batch) < 0.35
    ee = np.where(near[:, None], block + rng.normal(0, 0.03, (batch, 3)),
                  np.column_stack([rng.uniform(0.3, 0.7, batch), rng.uniform(-0.3, 0.3, batch),
                                   rng.uniform(0.02, 0.4, batch)]))
    down = np.tile([1.0, 0.0, 0.0, 0.0], (batch, 1))  # gripper pointing down
    touching = rng.random(batch) < 0.35
    raw = {
        'ee_pos': ee, 'ee_quat': down, 'ee_vel': rng.normal(0, 0.05, (batch, 3)),
        'finger_width': rng.uniform(0.0, 0.08, batch),
        'force_left': np.where(touching, rng.exponential(1.0, batch), 0.0),
        'force_right': np.where(touching & (rng.random(batch) < 0.5),
                                rng.exponential(1.0, batch), 0.0),
        'block_pos': block, 'block_quat': np.tile([0.0, 0.0, 0.0, 1.0], (batch, 1)),
        'block_vel': rng.normal(0, 0.02, (batch, 3)),
        'block_start_pos': block + np.column_stack([rng.normal(0, 0.03, (batch, 2)),
                                                    np.zeros(batch)]),
        'goal_pos': np.column_stack([rng.uniform(0.4, 0.7, batch), rng.uniform(-0.2, 0.2, batch),
                                     np.full(batch, rest_z)]),
        'action': rng.uniform(-1, 1, (batch, 4)),
    }
    return F.pack(F.compute_features(raw, rest_z))


def check_output(out: Any, batch: int, where: str = ''
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Check a reward's return value; return (total (B,) float64, terms {name: (B,) float64}).

    Raises ``TemplateError`` naming what is wrong (shape, type, non-finite values) and the fix.
    """
    at = f' {where}' if where else ''
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TemplateError(None, f'reward() returned {type(out).__name__}{at}, expected a '
                            'tuple (total, terms)', 'end with `return total, {"name": term, ...}`')
    total, terms = out
    total = _as_batch(total, batch, 'total', at)
    if not isinstance(terms, dict):
        raise TemplateError(None, f'the second return value is {type(terms).__name__}{at}, '
                            'expected a dict of named terms', 'return {"reach": reach, ...}')
    checked = {}
    for name, value in terms.items():
        if not isinstance(name, str):
            raise TemplateError(None, f'term key {name!r} is not a string{at}',
                                'name every term with a string key')
        checked[name] = _as_batch(value, batch, f'term {name!r}', at)
    return total, checked


def _as_batch(value: Any, batch: int, what: str, at: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TemplateError(None, f'{what} is {type(value).__name__}{at}, not numeric',
                            'compute it from numpy arrays of features') from None
    if arr.shape != (batch,):
        raise TemplateError(None, f'{what} has shape {arr.shape}{at}, expected ({batch},) (one '
                            'value per batch row)',
                            'keep the batch axis: scalar features are (B,), vectors (B, 3) — '
                            "reduce vectors with axis=-1, e.g. np.linalg.norm(x, axis=-1); "
                            "broadcast constants with np.ones_like(f['contact_force'])")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise TemplateError(None, f'{what} is NaN or infinite in {bad} of {batch} rows{at}',
                            'guard divisions and logs, e.g. x / (d + 1e-6), '
                            'np.log(np.maximum(x, 1e-6)), np.clip(...)')
    return arr


def _trial_in_child(code: str, batch: int) -> None:
    """Parse + run ``code`` on sample data at init/lower/upper theta and at random θ inside the
    ranges (branches that fire only there run too); raise TemplateError."""
    template = parse_template(code)
    fn = compile_reward(template)
    feats = F.unpack(sample_features(batch))
    thetas = {'at the initial parameters': {s.name: s.init for s in template.params},
              'with every parameter at its lower bound': {s.name: s.lower
                                                          for s in template.params},
              'with every parameter at its upper bound': {s.name: s.upper
                                                          for s in template.params}}
    rng = np.random.default_rng(0)
    for k in range(TRIAL_RANDOM_THETAS):
        thetas[f'at random parameters inside their ranges (draw {k + 1})'] = {
            s.name: float(np.exp(rng.uniform(np.log(s.lower), np.log(s.upper)))
                          if s.scale == 'log' else rng.uniform(s.lower, s.upper))
            for s in template.params}
    for where, theta in thetas.items():
        f = readonly_features(feats)
        with np.errstate(all='ignore'):
            try:
                out = fn(f, dict(theta))
            except MemoryError:
                raise TemplateError(None, f'reward() exceeded the memory limit {where}',
                                    'do not build large arrays or strings') from None
            except TemplateError:
                raise
            except RewardBoundError as exc:
                raise TemplateError(_exc_line(exc), f'{exc} {where}',
                                    'keep every array (B,) or (B, 3) and the reward a few '
                                    'numpy expressions') from None
            except Exception as exc:  # noqa: BLE001 - any failure of LLM code is reported
                line = _exc_line(exc)
                fix = ('do not modify the features in place: compute new arrays, e.g. '
                       'x = f[...] + 1.0' if 'read-only' in str(exc) else
                       'use only numbers, numpy arrays and the keyword arguments named'
                       if 'not allowed in a reward' in str(exc) else
                       'check shapes ((B,) scalars, (B, 3) vectors) and that every variable is '
                       'defined on all branches')
                raise TemplateError(line, f'reward() raised {type(exc).__name__}: {exc} {where}',
                                    fix) from None
        check_output(out, batch, where)


def _exc_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith('<reward'):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _child_main() -> None:
    """Entry of the trial-run child: JSON request on stdin, JSON verdict on stdout."""
    import resource

    req = json.loads(sys.stdin.read())
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + req['cpu_time_s']) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    limit = int(req['memory_mb']) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        _trial_in_child(req['code'], int(req['batch']))
        verdict = {'ok': True}
    except TemplateError as exc:
        verdict = {'ok': False, 'line': exc.line, 'rule': exc.rule, 'fix': exc.fix}
    except MemoryError:
        verdict = {'ok': False, 'line': None, 'rule': 'reward() exceeded the memory limit',
                   'fix': 'do not build large arrays or strings'}
    sys.stdout.write(json.dumps(verdict))
    sys.stdout.flush()


def trial_run(template: RewardTemplate, *, batch: int = 256, cpu_time_s: float = 2.0,
              memory_mb: int = 1024, wall_timeout_s: float = 20.0) -> None:
    """Run the template in a limited child process; raise ``TemplateError`` on any failure."""
    env = os.environ.copy()
    env.update(OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    req = json.dumps({'code': template.code, 'batch': batch, 'cpu_time_s': cpu_time_s,
                      'memory_mb': memory_mb})
    try:
        proc = subprocess.run([sys.executable, '-m', 'selfalign_reward.sandbox'], input=req,
                              capture_output=True, text=True, timeout=wall_timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise TemplateError(None, f'the trial run did not finish within {wall_timeout_s} s '
                            '(wall clock)', 'remove anything that loops or waits; the reward '
                            'must be a few vectorised numpy expressions') from None
    if proc.returncode != 0 or not proc.stdout.strip():
        if proc.returncode in (-24, -9, 152, 137):  # SIGXCPU / SIGKILL after the CPU limit
            raise TemplateError(None, f'the trial run exceeded the CPU-time limit of '
                                f'{cpu_time_s} s', 'avoid huge exponents and large '
                                'computations; use a few vectorised numpy expressions')
        tail = proc.stderr.strip().splitlines()[-3:]
        if any('MemoryError' in t for t in tail):
            raise TemplateError(None, 'reward() exceeded the memory limit',
                                'do not build large arrays or strings')
        raise TemplateError(None, f'the trial run crashed (exit code {proc.returncode}): '
                            f'{" | ".join(tail)}', 'simplify the reward to plain numpy '
                            'arithmetic over the features')
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    if not verdict['ok']:
        raise TemplateError(verdict['line'], verdict['rule'], verdict['fix'])


def validate_template(template: RewardTemplate | str, *, batch: int = 256,
                      cpu_time_s: float = 2.0, memory_mb: int = 1024,
                      wall_timeout_s: float = 20.0) -> RewardTemplate:
    """Parse (if given source) and trial-run the template in a resource-limited subprocess.

    The trial evaluates the reward on ``batch`` plausible random feature rows at the initial,
    all-lower and all-upper parameter values and at ``TRIAL_RANDOM_THETAS`` random θ inside the
    ranges, and checks it returns ``(total (B,), terms dict of (B,))``, all finite. Returns the
    parsed template; raises ``TemplateError``.
    """
    parsed = parse_template(template if isinstance(template, str) else template.code)
    trial_run(parsed, batch=batch, cpu_time_s=cpu_time_s, memory_mb=memory_mb,
              wall_timeout_s=wall_timeout_s)
    return parsed


if __name__ == '__main__':
    _child_main()
