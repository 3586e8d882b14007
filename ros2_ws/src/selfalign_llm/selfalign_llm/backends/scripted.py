"""The scripted teacher: a *simulated* LLM for offline runs (docs/method.md "Scripted teacher").

It answers the same prompts as a real LLM, in the same reply format, from structured context:

* propose / repair: the shipped reference template (``selfalign_reward/templates/<task>.py``)
  with a step plan; the initial theta reproduces the paper's mistakes (push weight 2.0 against
  a strong reach term; touch force threshold 1 N).
* rank: by the ground-truth ``tasks.progress`` with the standard noise models of preference
  learning: Boltzmann-rational choice with inverse temperature ``beta`` (a Plackett-Luce draw
  with weights exp(beta * progress); beta = inf is noiseless), then mistakes at rate
  ``mistake_rate`` (a Mallows perturbation whose expected fraction of reversed pairs is exactly
  ``mistake_rate``), and ties between neighbours whose progress differs by at most
  ``tie_margin``.
* analyze_failure: a simple rule on the episodes' facts (no touch -> lower the force threshold,
  raise the contact weight; touching but block not reaching the goal -> raise the push weight;
  grasping but not lifting -> raise the lift weight).

Always reported as model 'scripted-teacher (simulated)'. Pure numpy: no rclpy.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
import json
import math
import threading
from typing import Any

import numpy as np

from selfalign_core import tasks
from selfalign_llm.backends.base import BackendError, Completion, Request
from selfalign_reward.template import reference_template_source

MODEL_NAME = 'scripted-teacher (simulated)'

#: Step plans (dos and don'ts) that go with the stored templates.
PLANS = {
    'touch': (
        "1. Approach: DO move the fingers toward the block surface (ee_block_dist); DON'T "
        'reward the distance to the block centre, which an open gripper cannot reach.\n'
        '2. Touch: DO pay a bonus while a finger presses on the block (contact_force above a '
        "threshold); DON'T pay for knocking the block away at speed."),
    'grasp_lift': (
        "1. Approach: DO move the fingers toward the block surface (ee_block_dist); DON'T "
        'push the block away.\n'
        "2. Grasp: DO pay while both fingers press (both_fingers_contact_force); DON'T pay for "
        'one-finger contact.\n'
        "3. Lift: DO pay for block_lift while grasping, up to the target height; DON'T pay "
        'for lifting without a grasp.'),
    'push': (
        "1. Approach: DO move the fingers to the block (ee_block_dist); DON'T stop there.\n"
        "2. Push: DO reward the block getting closer to the goal (block_goal_dist); DON'T "
        'reward moving the block away from it.\n'
        "3. Keep it on the table: DO penalise block_lift; DON'T grasp and carry the block."),
}


@cache
def template_source(task: str) -> str:
    """The shipped reference template for ``task`` (``selfalign_reward/templates``), as the
    teacher writes it: without leading comment lines and module docstring."""
    tasks.get_task(task)
    text = reference_template_source(task)
    body = ast.parse(text).body
    skip = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip = body[0].end_lineno or 0
    lines = text.splitlines()[skip:]
    while lines and (lines[0].startswith('#') or not lines[0].strip()):
        lines.pop(0)
    return '\n'.join(lines).strip('\n') + '\n'


def proposal_reply(task: str) -> str:
    """The teacher's propose/repair reply: plan, then the template in a python block."""
    return f'## Plan\n{PLANS[task]}\n## Reward\n```python\n{template_source(task)}```\n'


# ALGO LOGIC: noise models of the simulated preference teacher.
@cache
def mallows_dispersion(num_items: int, mistake_rate: float) -> float:
    """Mallows phi in [0, 1] whose expected fraction of reversed pairs is ``mistake_rate``.

    Under the repeated-insertion model item i lands behind v of the i earlier items with
    probability proportional to phi**v, so E[reversed pairs] = sum_i E[V_i]; solved by bisection.
    """
    if num_items < 2 or mistake_rate <= 0:
        return 0.0
    if mistake_rate >= 0.5:
        return 1.0
    pairs = num_items * (num_items - 1) / 2

    def rate(phi: float) -> float:
        total = 0.0
        for i in range(1, num_items):
            w = phi ** np.arange(i + 1)
            total += float(np.dot(np.arange(i + 1), w) / w.sum())
        return total / pairs

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate(mid) < mistake_rate else (lo, mid)
    return 0.5 * (lo + hi)


def mallows_perturb(order: list[int], phi: float, rng: np.random.Generator) -> list[int]:
    """Repeated-insertion draw around ``order`` (best first) with dispersion ``phi``."""
    out: list[int] = []
    for i, item in enumerate(order):
        w = phi ** np.arange(i + 1) if phi > 0 else (np.arange(i + 1) == 0).astype(float)
        behind = int(rng.choice(i + 1, p=w / w.sum()))  # items it wrongly goes ahead of
        out.insert(len(out) - behind, item)
    return out


def noisy_ranking(progress: np.ndarray, rng: np.random.Generator, beta: float = math.inf,
                  mistake_rate: float = 0.0, tie_margin: float = 0.0) -> list[list[int]]:
    """Best-first groups of indices of ``progress`` (K,) under the teacher's noise models."""
    progress = np.asarray(progress, dtype=np.float64)
    k = len(progress)
    if math.isinf(beta):
        keys = progress + 1e-12 * rng.random(k)  # random order among exact equals
    else:
        keys = beta * progress + rng.gumbel(size=k)  # Plackett-Luce via the Gumbel-max trick
    order = [int(i) for i in np.argsort(-keys, kind='stable')]
    order = mallows_perturb(order, mallows_dispersion(k, mistake_rate), rng)
    groups = [[order[0]]]
    for prev, cur in zip(order, order[1:]):
        if abs(progress[cur] - progress[prev]) <= tie_margin:
            groups[-1].append(cur)
        else:
            groups.append([cur])
    return groups


@dataclass(frozen=True)
class TeacherConfig:
    """Noise settings of the scripted teacher."""

    beta: float = 20.0
    """Boltzmann inverse temperature over progress (progress spans ~0-5); inf = noiseless."""
    mistake_rate: float = 0.1
    """Expected fraction of episode pairs ranked against ground truth (0 to 0.5)."""
    tie_margin: float = 0.05
    """Neighbours whose progress differs by at most this are tied."""
    seed: int = 0
    """Seed of the teacher's random generator."""


class ScriptedTeacher:
    """Simulated LLM: replies to propose/repair/rank/analyze_failure requests from context."""

    name = 'scripted'
    model = MODEL_NAME

    def __init__(self, config: TeacherConfig | None = None) -> None:
        self.config = config or TeacherConfig()
        if not 0.0 <= self.config.mistake_rate <= 0.5:
            raise ValueError(f'teacher mistake_rate must be in [0, 0.5], got '
                             f'{self.config.mistake_rate}')
        self._rng = np.random.default_rng(self.config.seed)
        self._lock = threading.Lock()

    def complete(self, request: Request) -> Completion:
        """Reply in the requested format; BackendError if the context lacks what it needs."""
        ctx = request.context
        task = ctx.get('task')
        if task not in tasks.TASKS:
            raise BackendError(f'scripted teacher needs context task in {sorted(tasks.TASKS)}, '
                               f'got {task!r}', outcome='bad_request', retryable=False)
        if request.role in ('propose', 'repair'):
            text = proposal_reply(task)
        elif request.role == 'rank':
            text = self._rank(task, ctx)
        elif request.role == 'analyze_failure':
            text = self._analyze(task, ctx)
        else:
            raise BackendError(f'scripted teacher has no role {request.role!r}',
                               outcome='bad_request', retryable=False)
        return Completion(text=text, model=MODEL_NAME,
                          prompt_tokens=sum(len(str(m.get('content', ''))) // 4
                                            for m in request.messages),
                          completion_tokens=len(text) // 4)

    def _rank(self, task: str, ctx: dict[str, Any]) -> str:
        feats = ctx.get('features')
        if not feats:
            raise BackendError('scripted teacher needs context features to rank',
                               outcome='bad_request', retryable=False)
        prog = np.array([float(tasks.progress(task, f)) for f in feats])
        with self._lock:
            groups = noisy_ranking(prog, self._rng, self.config.beta, self.config.mistake_rate,
                                   self.config.tie_margin)
        return '```json\n' + json.dumps({'ranking': groups}) + '\n```'

    def _analyze(self, task: str, ctx: dict[str, Any]) -> str:
        params: list[dict[str, Any]] = ctx.get('params') or []
        feats = ctx.get('features') or []
        if not params or not feats:
            raise BackendError('scripted teacher needs context params and features to analyse',
                               outcome='bad_request', retryable=False)
        analysis, proposal = failure_rule(task, params, feats)
        return '```json\n' + json.dumps({'analysis': analysis, 'parameters': proposal}) + '\n```'


def _find(params: list[dict[str, Any]], *needles: str,
          exclude: tuple[dict[str, Any] | None, ...] = ()) -> dict[str, Any] | None:
    """The parameter the ``needles`` (case-insensitive, all of them) name, not in ``exclude``.

    Names are searched before meanings: in the touch stand-off template the meaning of
    ``approach_offset`` mentions touching ('0: touching'), and a search of names and meanings
    together took it for the touch bonus ``w_touch``.
    """
    candidates = [q for q in params if all(q is not e for e in exclude)]
    for text_of in (lambda q: q['name'], lambda q: f"{q['name']} {q.get('meaning', '')}"):
        for q in candidates:
            if all(n in text_of(q).lower() for n in needles):
                return q
    return None


def _move(q: dict[str, Any], factor: float) -> float:
    """``q``'s value times ``factor``, clipped inside its range (a hair inside the bounds)."""
    lo, hi = float(q['lower']), float(q['upper'])
    return float(np.clip(float(q['value']) * factor, lo, hi))


def failure_rule(task: str, params: list[dict[str, Any]], feats: list[dict[str, np.ndarray]]
                 ) -> tuple[str, dict[str, float]]:
    """The teacher's failure analysis: (analysis, {name: new value}) from episode facts.

    ``params``: dicts with name, value, lower, upper, meaning. ``feats``: feature dicts (T, ...).
    """
    touched = [float(np.max(f['contact_force'])) > tasks.TOUCH_FORCE_N for f in feats]
    proposal: dict[str, float] = {}
    if not any(touched) or task == 'touch':
        thr = _find(params, 'threshold') or _find(params, 'force')
        weight = (_find(params, 'touch', exclude=(thr,))
                  or _find(params, 'contact', exclude=(thr,)))
        if thr is not None:
            proposal[thr['name']] = _move(thr, 1 / 8)
        if weight is not None:
            proposal[weight['name']] = _move(weight, 2.0)
        analysis = ('The fingers come close to the block but the contact the reward counts is '
                    'rarely reached: the force threshold is above the forces a light touch '
                    'produces, so touching is not paid. Lower the threshold and raise the '
                    'contact bonus.')
    elif task == 'push':
        push = _find(params, 'push') or _find(params, 'goal')
        if push is not None:
            proposal[push['name']] = _move(push, 10.0)
        analysis = ('The gripper reaches and touches the block but the block does not move to '
                    'the goal: the approach term outweighs the push term, so staying at the '
                    'block pays more than pushing it. Raise the push weight well above the '
                    'reach weight.')
    elif not any(float(np.max(f['both_fingers_contact_force'])) > tasks.GRASP_FORCE_N
                 for f in feats):
        thr = _find(params, 'force')
        grip = (_find(params, 'grip', exclude=(thr,))
                or _find(params, 'grasp', exclude=(thr,)))
        if thr is not None:
            proposal[thr['name']] = _move(thr, 1 / 4)
        if grip is not None:
            proposal[grip['name']] = _move(grip, 2.0)
        analysis = ('The fingers touch the block but never hold it with both fingers at the '
                    'force the reward asks for, so the grasp term is never paid. Lower the '
                    'grip force threshold and raise the grasp bonus.')
    else:
        lift = _find(params, 'w_lift') or _find(params, 'lift')
        if lift is not None:
            proposal[lift['name']] = _move(lift, 3.0)
        analysis = ('The fingers grasp the block but it is not lifted high enough: the lift '
                    'term is too weak against holding still. Raise the lift weight.')
    if not proposal:  # unknown template: nudge the first parameter so the reply stays valid
        q = params[0]
        proposal[q['name']] = _move(q, 2.0)
        analysis += f" (No matching parameter found; doubling {q['name']}.)"
    return analysis, proposal
