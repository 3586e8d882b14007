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
  success stays low -> ask the LLM what blocks success (docs/method.md "Failure analysis");
* ``check_proposal`` validates the LLM's proposed θ against the template's ranges;
* ``PreferenceMemory`` keeps every ranking so far (the ranked episodes' features and ranks, as
  PEBBLE/B-Pref keep their labels) with a fixed share of each ranking's pairs held out;
* ``refit_theta`` fits θ to all kept pairs but the held-out ones and applies the fit only when
  the agreement on the held-out pairs improves. A failure analysis is evidence the rankings do
  not carry: the values it proposes are held while MH fits the rest, and the update is held
  back only when it orders the held-out pairs significantly worse (sign test).
  Fitting one ranking of 8 episodes at a time let θ wander wherever that ranking did not
  constrain it, and each move re-scored the whole replay (docs/method.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
import math
from pathlib import Path
import time

import numpy as np

from selfalign_core.episode import EpisodeRecord, stack_features
from selfalign_reward.alignment import (
    metropolis_hastings,
    MHResult,
    pair_agreement,
    pair_change,
    PairChange,
    ParamTransform,
    preference_pairs,
    rank_agreement,
    sign_change,
)
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
    heldout_fraction: float = 0.25
    """share of each ranking's preference pairs held out of the fit (at least one when the
    ranking has two or more pairs); an update is applied only if it orders them better"""
    max_rankings: int = 32
    """rankings the preference memory keeps (the oldest are dropped beyond this)"""
    analysis_gate_p: float = 0.05
    """a failure-analysis update is held back only when it orders the held-out pairs worse
    at this one-sided sign-test level (``alignment.pair_change``); the analysis is evidence the
    rankings do not carry, so agreement that is merely not better does not veto it"""
    update_gate_p: float = 0.05
    """an ordinary re-fit (no failure analysis) is applied only when it orders the held-out
    pairs better than the current θ and, of the pairs it orders differently, more better than
    worse at this one-sided sign-test level (1: better agreement alone is enough)"""

    gate_folds: int = 4
    """How an ordinary re-fit is tested on pairs it was not fit on. K >= 2 (default 4): K-fold
    cross-validation over every pair of every kept ranking — each pair is predicted by a fit
    made without it (K extra Metropolis–Hastings runs), and the θ applied is fit on all pairs.
    1: one fixed held-out split (``heldout_fraction`` of each ranking's pairs; the re-fit is fit
    on the rest), the rule before 2026-12-07. With few pairs the fixed split tests on a handful
    that a re-fit barely changes; cross-validation tests on all of them (docs/method.md)."""

    relative_to_start: bool = False
    """Fit the rankings on each episode's return relative to its start, Σ_t (r_t − r_0), not
    on Σ_t r_t: the episode's starting state (a goal drawn 10 or 20 cm away, an arm that
    starts near the block) then adds nothing to its return, only what the episode changed
    does (``PreparedBatch.start``; docs/method.md "Outer loop")."""

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f'heldout_fraction must be in (0, 1), got {self.heldout_fraction}')
        for name in ('analysis_gate_p', 'update_gate_p'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
        if self.gate_folds < 1:
            raise ValueError(f'gate_folds = {self.gate_folds}: must be >= 1 (1: one held-out '
                             'split; K >= 2: K-fold cross-validation)')
        if self.max_rankings < 1:
            raise ValueError(f'max_rankings must be >= 1, got {self.max_rankings}')
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
        self.memory = PreferenceMemory(self.cfg.max_rankings, self.cfg.heldout_fraction)
        self.prior_center: dict[str, float] | None = None
        """The LLM's belief about θ that the MH prior is centred on: the template's initial θ
        (None) until a failure analysis proposes new values and the update is applied."""
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

    def state_dict(self) -> dict:
        """The schedule and prior centre (what a resumed run needs; the episode buffer
        refills; the rankings are saved on their own, ``PreferenceMemory.save``)."""
        return {'last_update_step': int(self.last_update_step), 'updates': int(self.updates),
                'prior_center': self.prior_center}

    def load_state_dict(self, state: dict) -> None:
        self.last_update_step = int(state['last_update_step'])
        self.updates = int(state['updates'])
        center = state.get('prior_center')
        self.prior_center = None if center is None else {k: float(v) for k, v in center.items()}

    def candidates(self) -> list[EpisodeRecord]:
        """The most recent training (non-evaluation) episodes, at most ``candidate_window``."""
        train = [e for e in self.episodes if not e.evaluation]
        return train[-self.cfg.candidate_window:]

    def select(self, fn: RewardFunction, theta: Theta | None,
               candidates: list[EpisodeRecord] | None = None) -> list[EpisodeRecord]:
        """K diverse episodes of ``candidates`` (default: ``self.candidates()``): evenly spaced
        quantiles of the return under θ (relative to the start when the config says so)."""
        cands = self.candidates() if candidates is None else list(candidates)
        k = self.cfg.num_ranked
        if len(cands) <= k:
            return cands
        returns = fn.episode_returns(fn.prepare(
            stack_features(cands), relative_to_start=self.cfg.relative_to_start), theta)
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


@dataclass
class Ranking:
    """One LLM ranking as the memory keeps it."""

    features: np.ndarray
    """float32 (K, T, FEATURE_DIM), ``stack_features`` of the ranked episodes."""
    ranks: np.ndarray
    """int64 (K,), 0 best, ties allowed."""
    heldout: np.ndarray
    """bool (P,) over ``preference_pairs(ranks)``: True = held out of the fit."""
    env_step: int = 0


@dataclass
class PreferenceMemory:
    """Every LLM ranking so far, up to ``max_rankings`` (the oldest dropped first).

    Features do not depend on the reward template, so the kept rankings stay valid when θ or
    even the template changes: each re-fit re-scores all of them under the candidate θ.
    """

    max_rankings: int = 32
    heldout_fraction: float = 0.25
    rankings: list[Ranking] = field(default_factory=list)

    def add(self, features: np.ndarray, ranks: np.ndarray, rng: np.random.Generator,
            env_step: int = 0) -> None:
        """Keep one ranking; ``rng`` picks which of its pairs are held out."""
        ranks = np.asarray(ranks, dtype=np.int64).reshape(-1)
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 3 or features.shape[0] != ranks.shape[0]:
            raise ValueError(f'features {features.shape} do not match {ranks.shape[0]} ranks')
        n_pairs = len(preference_pairs(ranks)[0])
        n_held = 0 if n_pairs < 2 else max(1, int(round(self.heldout_fraction * n_pairs)))
        heldout = np.zeros(n_pairs, dtype=bool)
        heldout[rng.choice(n_pairs, size=n_held, replace=False)] = True
        self.rankings.append(Ranking(features, ranks, heldout, int(env_step)))
        del self.rankings[:-self.max_rankings]

    def __len__(self) -> int:
        return len(self.rankings)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                              tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(features (N, T, F), ranks (N,), groups (N,), fit pairs, held-out pairs).

        Episodes of all kept rankings in order; T is the longest, shorter episodes repeat
        their last row (as ``stack_features``). Pair indices refer to the N episodes.
        """
        if not self.rankings:
            raise ValueError('the preference memory is empty')
        t = max(r.features.shape[1] for r in self.rankings)
        feats, ranks, groups, fit, held = [], [], [], ([], []), ([], [])
        offset = 0
        for g, r in enumerate(self.rankings):
            f = r.features
            if f.shape[1] < t:
                pad = np.repeat(f[:, -1:], t - f.shape[1], axis=1)
                f = np.concatenate([f, pad], axis=1)
            feats.append(f)
            ranks.append(r.ranks)
            groups.append(np.full(len(r.ranks), g, dtype=np.int64))
            win, lose = preference_pairs(r.ranks)
            for dest, mask in ((fit, ~r.heldout), (held, r.heldout)):
                dest[0].append(win[mask] + offset)
                dest[1].append(lose[mask] + offset)
            offset += len(r.ranks)
        cat = np.concatenate
        return (cat(feats), cat(ranks), cat(groups), (cat(fit[0]), cat(fit[1])),
                (cat(held[0]), cat(held[1])))

    def save(self, path: str | Path) -> None:
        """Write the memory to ``path`` (.npz, atomically) for a resumed run."""
        path = Path(path)
        data: dict[str, np.ndarray] = {'count': np.array(len(self.rankings))}
        for i, r in enumerate(self.rankings):
            data.update({f'features_{i}': r.features, f'ranks_{i}': r.ranks,
                         f'heldout_{i}': r.heldout, f'env_step_{i}': np.array(r.env_step)})
        tmp = path.with_name(path.name + '.tmp.npz')
        np.savez_compressed(tmp, **data)
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        """Replace the kept rankings with those saved at ``path``."""
        with np.load(path) as d:
            self.rankings = [Ranking(d[f'features_{i}'], d[f'ranks_{i}'], d[f'heldout_{i}'],
                                     int(d[f'env_step_{i}'])) for i in range(int(d['count']))]
        del self.rankings[:-self.max_rankings]


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
    """What ``refit_theta`` did: agreement before and after, the MH start, the decision."""

    tau_before: float
    """Kendall τ of the current θ with the new ranking."""
    start: dict[str, float]
    failure_analysis: bool
    analysis: str
    proposal_used: bool
    proposal_rejected: str
    """Why a failure-analysis proposal was not used ('' if used or none was asked)."""
    result: MHResult
    mh_s: float
    """Wall time of the Metropolis–Hastings runs alone (K + 1 with the K-fold gate), s."""
    theta: dict[str, float] = field(default_factory=dict)
    """θ to use from now on: the MAP when ``applied``, else the current θ unchanged."""
    applied: bool = False
    tau_after: float = math.nan
    """Kendall τ of the MAP θ with the new ranking."""
    heldout_before: float = math.nan
    """Agreement (τ-a) of the current θ with the held-out pairs of every kept ranking."""
    heldout_after: float = math.nan
    """The same for the candidate θ: the MAP, or a failure analysis's θ alone."""
    heldout_change: PairChange | None = None
    """Held-out pairs the candidate orders worse / better than the current θ (sign test)."""
    held: tuple[str, ...] = ()
    """Parameters MH held at the failure analysis's proposal."""
    fitted_rest: bool = True
    """False when a failure analysis's values go alone: the MAP of the other parameters
    ordered the held-out pairs no better than the analysis's θ did."""
    num_fit_pairs: int = 0
    num_heldout_pairs: int = 0
    num_rankings: int = 0
    folds: int = 1
    """> 1: the held-out figures are K-fold cross-validated over every pair
    (``OuterLoopConfig.gate_folds``)."""
    theta_move: float = 0.0
    """How far the MAP is from the current θ: RMS over parameters of the move in MH space
    (log or logit) as a fraction of each parameter's range there (0 none, 1 a whole range)."""
    unchanged: bool = False
    """The candidate passed its gate but is the current θ (a failure analysis proposing the
    values θ already has, its fitted rest not going along): not ``applied``, nothing to re-score;
    an analysis's values still become the prior's centre."""

    @property
    def decision(self) -> str:
        """One line: applied or kept, with the held-out agreement that decided it."""
        verb = ('applied' if self.applied else 'kept the current θ'
                + (' (the candidate is the current θ)' if self.unchanged else ''))
        line = (f'{verb}: held-out agreement {self.heldout_before:.2f} -> '
                f'{self.heldout_after:.2f} on {self.num_heldout_pairs} pairs'
                + (f' ({self.folds}-fold cross-validated)' if self.folds > 1 else ''))
        c = self.heldout_change
        if c is None:
            return line
        if self.proposal_used:
            rest = 'the rest fitted' if self.fitted_rest else 'the rest unchanged'
            return line + (f' (failure analysis set {", ".join(self.held)}, {rest}; {c.worse} '
                           f'pairs worse, {c.better} better, sign-test p {c.p_worse:.2f})')
        return line + (f' ({c.worse} pairs worse, {c.better} better, sign-test p '
                       f'{c.p_better:.2f})')


def _wins(agreement_before: float, agreement_after: float, change: PairChange,
          gate_p: float) -> bool:
    """The ordinary gate: a new θ beats the old on pairs it was not fit on — better agreement,
    and of the pairs it orders differently more better than worse at the sign-test level."""
    return agreement_after > agreement_before and change.p_better <= gate_p


def refit_theta(fn: RewardFunction, template: RewardTemplate, theta: dict[str, float],
                episodes: list[EpisodeRecord], ranks: np.ndarray, success_rate: float,
                loop: OuterLoop, analyze: AnalyzeFn, *, mh_samples: int, mh_burn_in: int,
                beta: float, prior_width: float, rng: np.random.Generator,
                env_step: int = 0) -> Refit:
    """One outer-loop re-fit of θ to all rankings so far (alignment_node and the experiment).

    The new ranking joins ``loop.memory``; agreement of the current θ with it; failure analysis
    when ``loop`` says so (a proposal inside the ranges becomes the MH start and the prior's
    centre); Metropolis–Hastings over the fit pairs of every kept ranking, prior
    centred on the LLM's belief (``loop.prior_center``: the template's initial θ until a
    failure analysis is applied — not the current θ, so each ranking counts once); then the
    held-out test: ``Refit.theta`` is the MAP only when it orders the held-out pairs better than
    the current θ, else the current θ.

    A failure analysis is evidence the rankings do not carry (they already agree with the
    reward): its values are held while MH fits the other parameters, that fit is kept only if
    it orders the held-out pairs better than the analysis's θ alone, and the update is held
    back only when it orders them worse than the current θ at the sign-test level
    ``analysis_gate_p``; the prior centre moves by the proposed values only. The caller applies
    ``Refit.theta``. ``analyze`` may raise; the error propagates.
    """
    ranks = np.asarray(ranks, dtype=np.int64).reshape(-1)
    loop.memory.add(stack_features(episodes), ranks, rng, env_step)
    feats, all_ranks, groups, fit, held = loop.memory.arrays()
    prepared = fn.prepare(feats, contiguous=True, relative_to_start=loop.cfg.relative_to_start)
    newest = slice(len(all_ranks) - len(ranks), len(all_ranks))
    r_before = fn.episode_returns(prepared, theta)
    tau_before = rank_agreement(r_before[newest], ranks)
    start, analysis, used, rejected, held_names = dict(theta), '', False, '', ()
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
                held_names = tuple(n for n in fn.param_names if n in set(names))
    names = set(fn.param_names)
    center = loop.prior_center if loop.prior_center and set(loop.prior_center) == names \
        else fn.theta_dict(None)
    if used:  # the LLM's belief changes by what it proposed, not by the values fitted since
        center = {**center, **{n: start[n] for n in held_names}}
    t0 = time.perf_counter()

    def fit_map(pairs: tuple[np.ndarray, np.ndarray]) -> MHResult:
        # chains from the current θ (or the analysis's proposal) and from the prior's centre:
        # a θ applied earlier on few rankings can sit in a flat region of today's posterior
        # that a random walk from there does not leave (docs/method.md, "Outer loop")
        return metropolis_hastings(fn, prepared, all_ranks, start, num_samples=mh_samples,
                                   burn_in=mh_burn_in, beta=beta, prior_width=prior_width,
                                   prior_center=center, rng=rng, groups=groups,
                                   pairs=pairs, fixed=held_names,
                                   also_from=[center] if center != start else [])

    folds = loop.cfg.gate_folds if not used else 1  # an analysis keeps its own test (below)
    if folds > 1:  # every pair a test pair once, predicted by a fit made without it
        win, lose = np.concatenate([fit[0], held[0]]), np.concatenate([fit[1], held[1]])
        fold = rng.permutation(len(win)) % folds
        predicted = np.sign(r_before[win] - r_before[lose])
        for k in range(folds):
            test = fold == k
            if test.any() and not test.all():
                r_k = fn.episode_returns(prepared, fit_map((win[~test], lose[~test])).as_dict(
                    'map'))
                predicted[test] = np.sign(r_k[win[test]] - r_k[lose[test]])
        fit = held = (win, lose)  # tested on every pair; the θ applied is fit on every pair
    result = fit_map(fit)
    mh_s = time.perf_counter() - t0
    proposal = result.as_dict('map')
    r_after = fn.episode_returns(prepared, proposal)
    fitted_rest = not used
    if used:  # the fit of the parameters it did not name must earn its place against the
        # analysis's own θ as an ordinary re-fit does (better held-out agreement, and more
        # pairs better than worse at the sign-test level); else the analysis's values go alone
        r_start = fn.episode_returns(prepared, start)
        fitted_rest = _wins(pair_agreement(r_start, *held), pair_agreement(r_after, *held),
                            pair_change(r_start, r_after, *held), loop.cfg.update_gate_p)
        if not fitted_rest:
            proposal, r_after = dict(start), r_start
    held_before, held_after = pair_agreement(r_before, *held), pair_agreement(r_after, *held)
    change = pair_change(r_before, r_after, *held)
    if folds > 1:  # the cross-validated figures: each pair as predicted without it
        held_after = float(predicted.mean()) if len(predicted) else 0.0
        change = sign_change(np.sign(r_before[win] - r_before[lose]), predicted)
    if used:
        applied = change.p_worse >= loop.cfg.analysis_gate_p
    else:
        applied = _wins(held_before, held_after, change, loop.cfg.update_gate_p)
    if applied and used:
        loop.prior_center = center
    tr = ParamTransform(fn)
    move = (tr.to_u(fn.theta_array(proposal)) - tr.to_u(fn.theta_array(theta))) / tr.width
    unchanged = bool(applied and not np.any(move))  # e.g. an analysis restating θ's values
    applied = applied and not unchanged
    return Refit(float(tau_before), start, asked, analysis, used, rejected, result, mh_s,
                 theta=proposal if applied else dict(theta), applied=bool(applied),
                 tau_after=rank_agreement(r_after[newest], ranks),
                 heldout_before=held_before, heldout_after=held_after,
                 heldout_change=change, held=held_names, fitted_rest=fitted_rest,
                 num_fit_pairs=len(fit[0]), num_heldout_pairs=len(held[0]),
                 num_rankings=len(loop.memory), folds=folds,
                 theta_move=float(np.sqrt(np.mean(move ** 2))), unchanged=unchanged)
