"""Aligning reward parameters θ to LLM rankings: Boltzmann likelihood + Metropolis–Hastings.

docs/method.md "Outer loop". Given K episodes, the LLM's ranks (0 best, ties allowed) and a
reward template R_θ:

* every ordered pair of different ranks (i better than j) is a preference τi ≻ τj;
* episode returns under θ are z-scored across the ranked set (mean 0, std 1; all zeros when the
  returns are all equal), so β means the same for every task and reward scale;
* P(τi ≻ τj | θ) = σ(β (z_i − z_j)), β = 0.9; log-likelihood = Σ log P over the pairs;
* prior: independent Gaussians in the transformed space u (u = log θ for 'log' parameters, bounded
  to [log lower, log upper]; u = logit((θ − lower)/(upper − lower)) for 'linear' ones), centred
  on ``prior_center`` (the outer loop passes the LLM's belief: the template's initial θ or an
  applied failure-analysis proposal, ``outer_loop.refit_theta``) with std ``prior_width`` × the
  range width in u (log: log(upper/lower);
  linear: 6, i.e. logit 0.05..0.95). The posterior is defined over u, so no Jacobian enters;
* random-walk Metropolis–Hastings in u, step size adapted toward acceptance ``target_accept``
  (Robbins–Monro) during burn-in and frozen afterwards; MAP = the visited state (start included)
  with the highest log posterior.

All randomness comes from the ``np.random.Generator`` passed in. Pure numpy + scipy.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
import math

import numpy as np
from scipy.stats import binomtest, kendalltau

from selfalign_reward.evaluate import PreparedBatch, RewardFunction, RewardRuntimeError, Theta

DEFAULT_BETA = 0.9
LINEAR_LOGIT_WIDTH = 6.0  # width of a 'linear' range in logit space for the prior (0.05..0.95)
_EPS = 1e-9


def preference_pairs(ranks: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair of different ranks: (winners, losers) index arrays, rank 0 best.

    Ties yield no pair. Example: ranks [0, 2, 1] -> winners [0, 0, 2], losers [1, 2, 1].
    """
    r = np.asarray(ranks).reshape(-1)
    better = r[:, None] < r[None, :]
    win, lose = np.nonzero(better)
    return win.astype(np.int64), lose.astype(np.int64)


def normalise_returns(returns: np.ndarray) -> np.ndarray:
    """z-score returns across the ranked set; all zeros when they are (numerically) equal."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        return r
    mean = float(r.sum()) / r.size
    d = r - mean
    std = math.sqrt(float(d @ d) / r.size)  # population std; np.std is slow on tiny arrays
    if not math.isfinite(std) or std <= 1e-12 * (1.0 + abs(mean)):
        return np.zeros_like(r)
    return d / std


def normalise_grouped(returns: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """z-score returns (..., N) within each group (``groups`` (N,) ids 0..G-1); None: one group.

    Each LLM ranking is its own comparison set, so returns are standardised per ranking (a
    group with equal returns gets zeros), exactly as ``normalise_returns`` does for one.
    """
    r = np.asarray(returns, dtype=np.float64)
    if groups is None:
        if r.ndim == 1:
            return normalise_returns(r)
        mean = r.mean(axis=-1, keepdims=True)
        std = r.std(axis=-1, keepdims=True)
        flat = ~(std > 1e-12 * (1.0 + np.abs(mean)))
        return np.where(flat, 0.0, (r - mean) / np.where(flat, 1.0, std))
    onehot = np.eye(int(groups.max()) + 1)[groups]          # (N, G)
    counts = onehot.sum(axis=0)
    mean = (r @ onehot) / counts                            # (..., G)
    d = r - mean[..., groups]
    std = np.sqrt(((d * d) @ onehot) / counts)
    std = np.where(std > 1e-12 * (1.0 + np.abs(mean)), std, np.inf)  # flat group -> zeros
    return d / std[..., groups]


def pair_agreement(returns: np.ndarray, win: np.ndarray, lose: np.ndarray) -> float:
    """Kendall τ-a over given preference pairs: mean sign(R_win − R_lose), in [-1, 1].

    1 when the reward orders every pair as the LLM did, -1 when it reverses all, 0 for ties
    (or no pairs). Used for held-out pairs, which need not form a full ranking.
    """
    if len(win) == 0:
        return 0.0
    r = np.asarray(returns, dtype=np.float64)
    return float(np.sign(r[win] - r[lose]).mean())


@dataclass(frozen=True)
class PairChange:
    """How a new θ orders given preference pairs compared with the current θ."""

    worse: int
    """pairs the new θ orders worse (right -> tied or reversed, tied -> reversed)"""
    better: int
    """pairs it orders better"""
    p_worse: float
    """one-sided sign-test p-value that it orders pairs worse more often than better: the
    binomial tail P(X >= worse), X ~ Bin(worse + better, 1/2); 1 when nothing changed"""
    p_better: float = 1.0
    """the same test the other way: P(X >= better); 1 when nothing changed"""


def pair_change(returns_before: np.ndarray, returns_after: np.ndarray, win: np.ndarray,
                lose: np.ndarray) -> PairChange:
    """Pairs ordered worse and better under ``returns_after`` than ``returns_before``, with
    the sign test of 'worse' (pairs that change are the only evidence; unchanged ones say
    nothing about which θ is better)."""
    before = np.asarray(returns_before, dtype=np.float64)
    after = np.asarray(returns_after, dtype=np.float64)
    return sign_change(np.sign(before[win] - before[lose]), np.sign(after[win] - after[lose]))


def sign_change(signs_before: np.ndarray, signs_after: np.ndarray) -> PairChange:
    """``pair_change`` from each pair's order sign(R_win − R_lose) before and after (e.g. the
    after of each pair predicted by a fit that did not see it, ``outer_loop``'s K-fold gate)."""
    d = np.asarray(signs_after, dtype=np.float64) - np.asarray(signs_before, dtype=np.float64)
    worse, better = int((d < 0).sum()), int((d > 0).sum())
    def tail(k: int) -> float:
        return 1.0 if k == 0 else float(binomtest(k, worse + better, 0.5,
                                                  alternative='greater').pvalue)
    return PairChange(worse, better, tail(worse), tail(better))


def log_likelihood(returns: np.ndarray, win: np.ndarray, lose: np.ndarray,
                   beta: float = DEFAULT_BETA, normalise: bool = True) -> float:
    """Σ over pairs of log σ(β (R_win − R_lose)); returns z-scored unless ``normalise``=False."""
    z = normalise_returns(returns) if normalise else np.asarray(returns, dtype=np.float64)
    d = beta * (z[win] - z[lose])
    return -float(np.logaddexp(0.0, -d).sum())


def rank_agreement(returns: np.ndarray, ranks: np.ndarray | list[int]) -> float:
    """Kendall τ-b of returns (higher better) vs ranks (lower better); 0 if undefined."""
    r = np.asarray(ranks, dtype=np.float64)
    if len(r) < 2:
        return 0.0
    tau = kendalltau(np.asarray(returns, dtype=np.float64), -r).statistic
    return float(tau) if np.isfinite(tau) else 0.0


class ParamTransform:
    """Maps θ (parameter units) <-> u (unconstrained MH space) for a template's parameters."""

    def __init__(self, fn: RewardFunction) -> None:
        specs = fn.template.params
        self.names = fn.param_names
        self.lower = np.array([s.lower for s in specs], dtype=np.float64)
        self.upper = np.array([s.upper for s in specs], dtype=np.float64)
        self.is_log = np.array([s.scale == 'log' for s in specs])
        self.u_lower = np.where(self.is_log, np.log(np.maximum(self.lower, _EPS)), -np.inf)
        self.u_upper = np.where(self.is_log, np.log(np.maximum(self.upper, _EPS)), np.inf)
        self._log_list = self.is_log.tolist()
        self._lo_list = self.lower.tolist()
        self._hi_list = self.upper.tolist()
        self._span_list = (self.upper - self.lower).tolist()
        self.width = np.where(self.is_log, np.log(np.maximum(self.upper, _EPS)
                                                  / np.maximum(self.lower, _EPS)),
                              LINEAR_LOGIT_WIDTH)

    def to_u(self, theta: np.ndarray) -> np.ndarray:
        th = np.clip(np.asarray(theta, dtype=np.float64), self.lower, self.upper)
        pos = np.clip((th - self.lower) / (self.upper - self.lower), 1e-6, 1 - 1e-6)
        return np.where(self.is_log, np.log(np.maximum(th, _EPS)), np.log(pos / (1 - pos)))

    def to_theta(self, u: np.ndarray) -> np.ndarray:
        """u (..., P) -> θ (..., P), clipped to the ranges."""
        u = np.asarray(u, dtype=np.float64)
        lin = self.lower + (self.upper - self.lower) / (1.0 + np.exp(-np.where(self.is_log, 0, u)))
        return np.clip(np.where(self.is_log, np.exp(np.where(self.is_log, u, 0)), lin),
                       self.lower, self.upper)

    def to_theta_list(self, u: np.ndarray) -> list[float]:
        """One u (P,) -> θ as a list of floats (the fast path of the MH loop)."""
        out = []
        for k, v in enumerate(u.tolist()):
            if self._log_list[k]:
                x = math.exp(v)
            else:
                x = self._lo_list[k] + self._span_list[k] / (1.0 + math.exp(-v))
            out.append(min(max(x, self._lo_list[k]), self._hi_list[k]))
        return out

    def inside(self, u: np.ndarray) -> bool:
        return bool((u >= self.u_lower).all() and (u <= self.u_upper).all())


@dataclass
class MHResult:
    """Outcome of one Metropolis–Hastings run. θ arrays are in ``param_names`` order.

    samples: (S, P) θ after burn-in; log_posterior: (S,) of those samples.
    """

    param_names: tuple[str, ...]
    theta_start: np.ndarray
    theta_map: np.ndarray
    theta_mean: np.ndarray
    theta_std: np.ndarray
    acceptance_rate: float
    step_size: float
    samples: np.ndarray
    log_posterior: np.ndarray
    log_likelihood_before: float
    log_likelihood_after: float
    kendall_tau_before: float
    kendall_tau_after: float
    num_pairs: int

    def as_dict(self, which: str = 'map') -> dict[str, float]:
        """θ as {name: value}; ``which`` is 'map', 'mean' or 'start'."""
        arr = {'map': self.theta_map, 'mean': self.theta_mean, 'start': self.theta_start}[which]
        return {n: float(v) for n, v in zip(self.param_names, arr)}


class AlignmentProblem:
    """Log posterior of θ given K ranked episodes, with everything θ-independent precomputed.

    Args:
        fn: the reward function R_θ.
        episodes: packed features (K, T, FEATURE_DIM) or ``RewardFunction.prepare``'s result.
        ranks: (K,) LLM ranks, 0 best, ties allowed.
        theta_center: prior centre; dict or array.
        beta: Boltzmann rationality.
        prior_width: prior std as a fraction of each parameter's transformed range width.
        groups: (K,) ranking id of each episode (0..G-1) when the episodes come from several
            LLM rankings: ranks compare only within a ranking and returns are z-scored per
            ranking. None: one ranking.
        pairs: (winners, losers) index arrays of the preference pairs to fit (e.g. without
            the held-out ones); None: every pair the ranks imply within each ranking.
    """

    def __init__(self, fn: RewardFunction, episodes: np.ndarray | PreparedBatch,
                 ranks: np.ndarray | list[int], theta_center: Theta | None = None,
                 beta: float = DEFAULT_BETA, prior_width: float = 0.5,
                 groups: np.ndarray | None = None,
                 pairs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.fn = fn
        self.batch = fn.prepare(episodes, contiguous=True)
        if len(self.batch.lead) != 2:
            raise ValueError(f'episodes must be (K, T, FEATURE_DIM), got leading shape '
                             f'{self.batch.lead}')
        self.ranks = np.asarray(ranks).reshape(-1)
        if self.ranks.shape[0] != self.batch.lead[0]:
            raise ValueError(f'{self.ranks.shape[0]} ranks for {self.batch.lead[0]} episodes')
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64).reshape(-1)
        if self.groups is not None and self.groups.shape != self.ranks.shape:
            raise ValueError(f'{self.groups.shape[0]} group ids for {self.ranks.shape[0]} '
                             'episodes')
        if pairs is not None:
            self.win, self.lose = (np.asarray(a, dtype=np.int64) for a in pairs)
        else:
            self.win, self.lose = preference_pairs(self.ranks)
            if self.groups is not None:
                same = self.groups[self.win] == self.groups[self.lose]
                self.win, self.lose = self.win[same], self.lose[same]
        self._single = self.groups is None and pairs is None
        self.beta = float(beta)
        self.transform = ParamTransform(fn)
        self.theta_center = fn.theta_array(theta_center)
        self.u_center = self.transform.to_u(self.theta_center)
        self.prior_std = np.maximum(prior_width * self.transform.width, 1e-6)
        self._names = fn.param_names

    def returns(self, theta: np.ndarray) -> np.ndarray:
        """(K,) episode returns under θ (array in parameter order)."""
        return self.fn.episode_returns(self.batch, dict(zip(self._names, theta.tolist())))

    def _ll(self, returns: np.ndarray) -> float:
        z = normalise_grouped(returns, self.groups)
        return log_likelihood(z, self.win, self.lose, self.beta, normalise=False)

    def log_likelihood(self, theta: np.ndarray) -> float:
        return self._ll(self.returns(theta))

    def log_prior_u(self, u: np.ndarray) -> float:
        if not self.transform.inside(u):
            return -math.inf
        z = (u - self.u_center) / self.prior_std
        return -0.5 * float(z @ z)

    def log_posterior_u(self, u: np.ndarray) -> tuple[float, float]:
        """(log posterior, log likelihood) at u; -inf when outside the ranges or non-finite."""
        lp = self.log_prior_u(u)
        if not math.isfinite(lp):
            return -math.inf, -math.inf
        try:
            theta = dict(zip(self._names, self.transform.to_theta_list(u)))
            ll = self._ll(self.fn.episode_returns(self.batch, theta))
        except RewardRuntimeError:
            return -math.inf, -math.inf
        return lp + ll, ll

    def tau(self, theta: np.ndarray) -> float:
        """Kendall τ-b with the ranking (one ranking, all pairs), else τ-a over the fit pairs."""
        if self._single:
            return rank_agreement(self.returns(theta), self.ranks)
        return pair_agreement(self.returns(theta), self.win, self.lose)

    def log_posterior_many(self, us: np.ndarray) -> np.ndarray:
        """Log posterior of C points (C, p) in one template call; -inf outside or non-finite.

        Needs ``fn.broadcasts_over_theta`` (checked by ``metropolis_hastings``).
        """
        tr = self.transform
        inside = np.all((us >= tr.u_lower) & (us <= tr.u_upper), axis=1)
        out = np.full(len(us), -math.inf)
        if not inside.any():
            return out
        z = (us[inside] - self.u_center) / self.prior_std
        prior = -0.5 * np.einsum('ij,ij->i', z, z)
        try:
            r = self.fn.episode_returns_many(self.batch, self.transform.to_theta(us[inside]))
        except RewardRuntimeError:
            return out
        finite = np.isfinite(r).all(axis=1)  # like the one-θ path: non-finite -> -inf
        r = np.where(np.isfinite(r), r, 0.0)
        zr = normalise_grouped(r, self.groups)
        d = self.beta * (zr[:, self.win] - zr[:, self.lose])
        ll = -np.logaddexp(0.0, -d).sum(axis=1)
        lp = prior + ll
        out[inside] = np.where(finite & np.isfinite(lp), lp, -math.inf)
        return out


def metropolis_hastings(fn: RewardFunction, episodes: np.ndarray | PreparedBatch,
                        ranks: np.ndarray | list[int], theta0: Theta | None = None, *,
                        num_samples: int = 2000, burn_in: int = 500,
                        beta: float = DEFAULT_BETA, prior_width: float = 0.5,
                        init_step: float = 0.2, target_accept: float = 0.3,
                        prior_center: Theta | None = None,
                        rng: np.random.Generator | None = None, chains: int = 16,
                        groups: np.ndarray | None = None,
                        pairs: tuple[np.ndarray, np.ndarray] | None = None,
                        fixed: Collection[str] = (),
                        also_from: Sequence[Theta] = ()) -> MHResult:
    """Sample the posterior over θ and return its MAP, mean, spread and rank agreement.

    ``theta0`` is the chain's start (default: the template's initial values); ``prior_center``
    the prior's centre (default: ``theta0``; ``outer_loop.refit_theta`` passes the LLM's belief
    and starts the chain at the current θ or a failure-analysis proposal). The proposal is
    u' = u + step · prior_std · N(0, I); ``init_step`` is the initial ``step``.

    ``chains`` chains run side by side from the same start, sharing the adapted step size; each
    iteration evaluates the reward for all of them in one call (``num_samples`` and ``burn_in``
    are totals over the chains). That is several times faster, and used only when the template
    broadcasts over θ (checked against one-θ evaluation); otherwise one chain runs.

    ``groups`` and ``pairs`` fit several rankings at once (see ``AlignmentProblem``); the
    result's Kendall τ is then the agreement over the fit pairs.

    ``fixed`` names parameters held at their start value: the chain moves only the others
    (``outer_loop.refit_theta`` holds the values a failure analysis set).

    ``also_from``: more starting points; the chains are dealt out over ``theta0`` and these
    in turn (with one chain: it starts from the one of highest posterior). The posterior of a
    reward template is often multimodal, and a random walk started in a flat region of it (a
    θ that makes the reward nearly constant over the ranked episodes) does not find its way
    back within a few hundred steps; ``outer_loop.refit_theta`` also starts from the prior's
    centre. ``theta_start`` and ``kendall_tau_before`` stay those of ``theta0``.
    """
    if num_samples < 1 or burn_in < 0:
        raise ValueError('num_samples must be >= 1 and burn_in >= 0')
    unknown = set(fixed) - set(fn.param_names)
    if unknown:
        raise ValueError(f'fixed names unknown parameters {sorted(unknown)}; the template has '
                         f'{list(fn.param_names)}')
    rng = np.random.default_rng() if rng is None else rng
    start = fn.theta_array(theta0)
    center = start if prior_center is None else fn.theta_array(prior_center)
    prob = AlignmentProblem(fn, episodes, ranks, center, beta, prior_width, groups, pairs)
    tr = prob.transform
    held = np.array([n in fixed for n in fn.param_names])
    step_std = np.where(held, 0.0, prob.prior_std)
    u = tr.to_u(start)
    lp, ll = prob.log_posterior_u(u)
    ll_before = prob.log_likelihood(start) if math.isfinite(ll) else -math.inf
    starts = [u] + [tr.to_u(fn.theta_array(t)) for t in also_from]
    if chains > 1:
        probe = tr.to_theta(np.stack([u, u + 0.5 * prob.prior_std, u - 0.5 * prob.prior_std]))
        if fn.broadcasts_over_theta(prob.batch, probe):
            return _held_exactly(_multi_chain(prob, np.stack(starts), ll_before, start,
                                              num_samples, burn_in, init_step, target_accept,
                                              chains, rng, step_std), held)
    for other in starts[1:]:  # one chain: from the start of highest posterior
        lp_other, _ = prob.log_posterior_u(other)
        if lp_other > lp or not math.isfinite(lp):
            u, lp = other, lp_other
    best_u, best_lp = u.copy(), lp
    log_step = math.log(init_step)
    p = len(u)
    samples = np.empty((num_samples, p))
    post = np.empty(num_samples)
    accepted = 0
    total = burn_in + num_samples
    noise = rng.standard_normal((total, p)) * step_std
    log_unif = np.log(rng.random(total))
    for it in range(total):
        prop = u + math.exp(log_step) * noise[it]
        lp_new, _ = prob.log_posterior_u(prop)
        delta = lp_new - lp
        if math.isfinite(lp_new) and (not math.isfinite(lp) or log_unif[it] < delta):
            u, lp = prop, lp_new
            acc = 1.0
            if lp > best_lp:
                best_u, best_lp = u.copy(), lp
        else:
            acc = 0.0
        if it < burn_in:
            alpha = 1.0 if acc else (math.exp(min(delta, 0.0)) if math.isfinite(lp_new) else 0.0)
            log_step += (alpha - target_accept) / (1.0 + it) ** 0.6
            log_step = min(max(log_step, math.log(1e-4)), math.log(5.0))
        else:
            k = it - burn_in
            accepted += int(acc)
            samples[k] = u
            post[k] = lp
    theta_samples = tr.to_theta(samples)
    theta_map = tr.to_theta(best_u)
    return _held_exactly(MHResult(
        param_names=fn.param_names, theta_start=start, theta_map=theta_map,
        theta_mean=theta_samples.mean(axis=0), theta_std=theta_samples.std(axis=0),
        acceptance_rate=accepted / num_samples, step_size=math.exp(log_step),
        samples=theta_samples, log_posterior=post,
        log_likelihood_before=ll_before, log_likelihood_after=prob.log_likelihood(theta_map),
        kendall_tau_before=prob.tau(start), kendall_tau_after=prob.tau(theta_map),
        num_pairs=len(prob.win)), held)


def _held_exactly(res: MHResult, held: np.ndarray) -> MHResult:
    """Held parameters exactly at their start (the u round trip is off by an ulp)."""
    if held.any():
        res.theta_map[held] = res.theta_start[held]
        res.samples[:, held] = res.theta_start[held]
        res.theta_mean[held] = res.theta_start[held]
        res.theta_std[held] = 0.0
    return res


def _multi_chain(prob: AlignmentProblem, starts: np.ndarray, ll_before: float,
                 start: np.ndarray, num_samples: int, burn_in: int, init_step: float,
                 target_accept: float, chains: int, rng: np.random.Generator,
                 step_std: np.ndarray) -> MHResult:
    """``metropolis_hastings`` with C chains advanced together, dealt out over ``starts``
    (S, p) in turn (see its docstring)."""
    c, p = chains, starts.shape[1]
    # The shared step size needs enough adaptation iterations, however many chains share it.
    burn, keep = max(-(-burn_in // c), min(burn_in, 250)), -(-num_samples // c)
    us = starts[np.arange(c) % len(starts)].copy()
    lps = prob.log_posterior_many(us)
    i0 = int(np.argmax(np.where(np.isfinite(lps), lps, -np.inf)))
    best_u, best_lp = us[i0].copy(), float(lps[i0])
    log_step = math.log(init_step)
    samples = np.empty((keep, c, p))
    post = np.empty((keep, c))
    accepted = 0
    noise = rng.standard_normal((burn + keep, c, p)) * step_std
    log_unif = np.log(rng.random((burn + keep, c)))
    for it in range(burn + keep):
        prop = us + math.exp(log_step) * noise[it]
        lp_new = prob.log_posterior_many(prop)
        with np.errstate(invalid='ignore'):
            delta = lp_new - lps
            ok = np.isfinite(lp_new)
            accept = ok & (~np.isfinite(lps) | (log_unif[it] < delta))
        us = np.where(accept[:, None], prop, us)
        lps = np.where(accept, lp_new, lps)
        i = int(np.argmax(lps))
        if lps[i] > best_lp:
            best_u, best_lp = us[i].copy(), float(lps[i])
        if it < burn:
            with np.errstate(invalid='ignore', over='ignore'):
                alpha = np.where(accept, 1.0, np.where(ok, np.exp(np.minimum(delta, 0.0)), 0.0))
            log_step += (float(alpha.mean()) - target_accept) / (1.0 + it) ** 0.6
            log_step = min(max(log_step, math.log(1e-4)), math.log(5.0))
        else:
            samples[it - burn] = us
            post[it - burn] = lps
            accepted += int(accept.sum())
    tr = prob.transform
    flat = samples.transpose(1, 0, 2).reshape(-1, p)[:num_samples]  # chain after chain
    theta_samples = tr.to_theta(flat)
    theta_map = tr.to_theta(best_u)
    return MHResult(
        param_names=prob.fn.param_names, theta_start=start, theta_map=theta_map,
        theta_mean=theta_samples.mean(axis=0), theta_std=theta_samples.std(axis=0),
        acceptance_rate=accepted / (keep * c), step_size=math.exp(log_step),
        samples=theta_samples, log_posterior=post.T.reshape(-1)[:num_samples],
        log_likelihood_before=ll_before, log_likelihood_after=prob.log_likelihood(theta_map),
        kendall_tau_before=prob.tau(start), kendall_tau_after=prob.tau(theta_map),
        num_pairs=len(prob.win))
