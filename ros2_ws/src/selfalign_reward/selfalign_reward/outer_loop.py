"""Decision logic of the outer (self-alignment) loop, free of ROS: when, which episodes, start.

``alignment_node`` only wires this to topics and services:

* ``OuterLoop.add`` keeps a bounded buffer of recent episodes;
* ``update_due`` says when the episodes' ``env_step`` (the clock) has crossed the next multiple of
  ``reward_update_every_steps`` since the last update; ``state_dict``/``load_state_dict`` carry
  that schedule across a resume (a resumed policy may replay steps: updates stay on the grid);
* ``select`` picks K diverse recent episodes: sorted by return under the current θ, taken at
  evenly spaced quantiles (best, worst and in between), so the LLM ranks a spread of behaviours;
* ``success_rate`` over the recent window (evaluation episodes when there are any);
* ``needs_failure_analysis``: the reward already agrees with the LLM (Kendall τ ≥ threshold) yet
  success stays low -> ask the LLM what blocks success (METHOD.md);
* ``check_proposal`` validates the LLM's proposed θ against the template's ranges.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
import time

import numpy as np

from selfalign_reward.alignment import metropolis_hastings, MHResult, rank_agreement
from selfalign_reward.episode import EpisodeRecord, stack_features
from selfalign_reward.evaluate import RewardFunction, Theta
from selfalign_reward.template import RewardTemplate


@dataclass(frozen=True)
class OuterLoopConfig:
    """Outer-loop settings (alignment_node parameters of the same names)."""

    reward_update_every_steps: int = 10_000
    """environment steps between reward updates"""
    num_ranked: int = 8
    """K, episodes the LLM ranks per update"""
    buffer_size: int = 200
    """recent episodes kept"""
    candidate_window: int = 64
    """the most recent episodes ``select`` chooses from"""
    success_window: int = 20
    """recent episodes the success rate is computed over"""
    agreement_threshold: float = 0.7
    """Kendall τ (reward vs LLM ranking) at or above which the reward 'agrees'"""
    success_threshold: float = 0.2
    """success rate at or below which an agreeing reward triggers failure analysis"""

    def __post_init__(self) -> None:
        if self.reward_update_every_steps < 1:
            raise ValueError('reward_update_every_steps must be >= 1')
        if self.num_ranked < 2:
            raise ValueError(f'num_ranked must be >= 2 (got {self.num_ranked}); ranking needs '
                             'at least two episodes')
        if self.buffer_size < self.num_ranked or self.candidate_window < self.num_ranked:
            raise ValueError('buffer_size and candidate_window must be >= num_ranked')


class OuterLoop:
    """Buffer of recent episodes plus the update schedule. Not thread-safe: one owner."""

    def __init__(self, cfg: OuterLoopConfig | None = None) -> None:
        self.cfg = cfg or OuterLoopConfig()
        self.episodes: deque[EpisodeRecord] = deque(maxlen=self.cfg.buffer_size)
        self.last_update_step = 0
        self.env_step = 0
        self.updates = 0

    def add(self, episode: EpisodeRecord) -> None:
        """Keep an episode; its env_step advances the clock."""
        self.episodes.append(episode)
        self.env_step = max(self.env_step, int(episode.env_step))

    def update_due(self) -> bool:
        """True when the clock crossed a multiple of ``reward_update_every_steps`` beyond the
        last update's and K training episodes exist."""
        every = self.cfg.reward_update_every_steps
        enough = sum(not e.evaluation for e in self.episodes) >= self.cfg.num_ranked
        return enough and self.env_step // every > self.last_update_step // every

    def mark_updated(self, env_step: int | None = None) -> None:
        """Record an update at ``env_step`` (default: now); also after a failed update."""
        self.last_update_step = self.env_step if env_step is None else int(env_step)
        self.updates += 1

    def state_dict(self) -> dict[str, int]:
        """The schedule (what a resumed run needs; the episode buffer refills)."""
        return {'last_update_step': int(self.last_update_step), 'updates': int(self.updates)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.last_update_step = int(state['last_update_step'])
        self.updates = int(state['updates'])

    def candidates(self) -> list[EpisodeRecord]:
        """The most recent training (non-evaluation) episodes, at most ``candidate_window``."""
        train = [e for e in self.episodes if not e.evaluation]
        return train[-self.cfg.candidate_window:]

    def select(self, fn: RewardFunction, theta: Theta | None) -> list[EpisodeRecord]:
        """K diverse recent episodes: evenly spaced quantiles of the return under θ."""
        cands = self.candidates()
        k = self.cfg.num_ranked
        if len(cands) <= k:
            return list(cands)
        returns = fn.episode_returns(stack_features(cands), theta)
        return [cands[i] for i in select_diverse(returns, k)]

    def success_rate(self) -> float:
        """Success over the last ``success_window`` evaluation episodes (training ones if none)."""
        evals = [e for e in self.episodes if e.evaluation]
        pool = evals if evals else list(self.episodes)
        recent = pool[-self.cfg.success_window:]
        return float(np.mean([e.success for e in recent])) if recent else 0.0

    def needs_failure_analysis(self, tau_before: float, success_rate: float) -> bool:
        """The reward agrees with the LLM (τ high) but the task still fails (success low)."""
        return (tau_before >= self.cfg.agreement_threshold
                and success_rate <= self.cfg.success_threshold)


def select_diverse(returns: np.ndarray, k: int) -> list[int]:
    """Indices of k entries at evenly spaced quantiles of ``returns`` (best first), distinct."""
    order = np.argsort(-np.asarray(returns, dtype=np.float64), kind='stable')
    n = len(order)
    if k >= n:
        return order.tolist()
    picks = np.round(np.linspace(0, n - 1, k)).astype(int)
    return order[np.unique(picks)].tolist()


def check_proposal(template: RewardTemplate, names: list[str], values: list[float],
                   current: dict[str, float]) -> tuple[dict[str, float] | None, str]:
    """Merge a proposed θ (some or all parameters) into ``current``; (θ, '') or (None, why)."""
    if len(names) != len(values):
        return None, f'{len(names)} parameter names but {len(values)} values'
    theta = dict(current)
    for name, value in zip(names, values):
        try:
            spec = template.spec(name)
        except KeyError as exc:
            return None, str(exc.args[0])
        if not spec.contains(float(value)):
            return None, (f'proposed {name} = {value} is outside its range '
                          f'[{spec.lower}, {spec.upper}]')
        theta[name] = float(value)
    return theta, ''


#: ``Refit.proposal_rejected`` when the LLM gave no reply at all.
ANALYSIS_UNAVAILABLE = 'failure analysis unavailable'

#: Failure analysis as the refit sees it: given τ before, return (analysis text, parameter
#: names, proposed values), or None when the LLM gave no usable reply.
AnalyzeFn = Callable[[float], 'tuple[str, list[str], list[float]] | None']


@dataclass
class Refit:
    """What ``refit_theta`` did: agreement before, the MH start and its outcome."""

    tau_before: float
    start: dict[str, float]
    failure_analysis: bool
    analysis: str
    proposal_used: bool
    proposal_rejected: str
    """Why a failure-analysis proposal was not used ('' if used or none was asked)."""
    result: MHResult
    mh_s: float
    """Wall time of the Metropolis–Hastings run alone, s."""


def refit_theta(fn: RewardFunction, template: RewardTemplate, theta: dict[str, float],
                episodes: list[EpisodeRecord], ranks: np.ndarray, success_rate: float,
                loop: OuterLoop, analyze: AnalyzeFn, *, mh_samples: int, mh_burn_in: int,
                beta: float, prior_width: float, rng: np.random.Generator) -> Refit:
    """One outer-loop re-fit of θ to a ranking (alignment_node and the experiment loop).

    Agreement before; failure analysis when ``loop`` says so (a proposal inside the ranges
    becomes the MH start, the prior stays on θ); then Metropolis–Hastings. The caller ranks
    the episodes and applies ``result``'s MAP. ``analyze`` may raise; the error propagates.
    """
    prepared = fn.prepare(stack_features(episodes))
    tau_before = rank_agreement(fn.episode_returns(prepared, theta), ranks)
    start, analysis, used, rejected = dict(theta), '', False, ''
    asked = loop.needs_failure_analysis(tau_before, success_rate)
    if asked:
        reply = analyze(tau_before)
        if reply is None:
            rejected = ANALYSIS_UNAVAILABLE
        else:
            analysis, names, values = reply
            proposed, why = check_proposal(template, list(names),
                                           [float(v) for v in values], theta)
            if proposed is None:
                rejected = why
            else:
                start, used = proposed, True
    t0 = time.perf_counter()
    result = metropolis_hastings(fn, prepared, ranks, start, num_samples=mh_samples,
                                 burn_in=mh_burn_in, beta=beta, prior_width=prior_width,
                                 rng=rng)
    return Refit(float(tau_before), start, asked, analysis, used, rejected, result,
                 time.perf_counter() - t0)
