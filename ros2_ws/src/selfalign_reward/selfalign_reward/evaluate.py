"""Vectorised evaluation of a reward template R_θ over batches of transitions and episodes.

``RewardFunction(template)`` compiles a parsed (and validated) template once, in restricted globals
(``sandbox.compile_reward``), and evaluates it on

* a packed feature array ``(..., FEATURE_DIM)`` (``features.pack`` layout) or a feature dict,
* with θ as a dict ``{name: value}`` or an array in ``template.params`` order.

Leading axes are flattened to one batch axis before the template runs (templates index vectors as
``x[:, k]``) and restored afterwards. Outputs are float64.

Non-finite outputs at runtime: ``nonfinite='raise'`` (default) raises ``RewardRuntimeError``
naming the term and θ; ``nonfinite='zero'`` replaces NaN/±inf by 0 and counts the replaced values
in ``fn.nonfinite_count`` (for replay re-scoring, where one bad row must not stop training).
Metropolis–Hastings uses 'raise' and rejects such proposals.

For repeated evaluation of the same episodes under many θ (MH), ``prepare(packed,
contiguous=True)`` extracts the features the template reads once, into contiguous arrays, and
every evaluation method accepts the prepared batch.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfalign_core import features as F
from selfalign_reward.sandbox import compile_reward, readonly_features
from selfalign_reward.template import parse_template, RewardTemplate

Theta = Mapping[str, float] | np.ndarray | list | tuple


def used_features(template: RewardTemplate) -> tuple[str, ...]:
    """Feature names a parsed template reads as f['name'], in vocabulary order."""
    names = set()
    for node in ast.walk(ast.parse(template.code)):
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                and node.value.id == 'f' and isinstance(node.slice, ast.Constant)):
            names.add(node.slice.value)
    return tuple(n for n in F.FEATURE_NAMES if n in names)


class RewardRuntimeError(RuntimeError):
    """The reward raised or produced non-finite values on real data."""


@dataclass(frozen=True)
class PreparedBatch:
    """Features unpacked once for repeated evaluation: flat dict of (N*T, ...) views.

    ``lead`` is the original leading shape, e.g. (N, T) for N episodes of T steps.
    """

    features: dict[str, np.ndarray]
    lead: tuple[int, ...]
    start: PreparedBatch | None = None
    """``prepare(..., relative_to_start=True)``: the first step of each episode (lead (N, 1)).
    Episode returns are then relative to the start: step t pays r_t − r_0, so the return is
    Σ_t r_t − T·r_0 — what the episode gained over staying where it began."""

    @property
    def size(self) -> int:
        return int(np.prod(self.lead, dtype=int))


class RewardFunction:
    """A compiled reward template: ``fn(features, theta) -> (total, terms)``.

    Args:
        template: a ``RewardTemplate`` (or its source, parsed here). It should have passed
            ``validate_template`` before it sees real data.
        nonfinite: 'raise' or 'zero' (see the module docstring).
    """

    def __init__(self, template: RewardTemplate | str, nonfinite: str = 'raise') -> None:
        if isinstance(template, str):
            template = parse_template(template)
        if nonfinite not in ('raise', 'zero'):
            raise ValueError(f"nonfinite must be 'raise' or 'zero', got {nonfinite!r}")
        self.template = template
        self.nonfinite = nonfinite
        self.nonfinite_count = 0
        self.param_names: tuple[str, ...] = template.param_names
        self.lower = np.array([s.lower for s in template.params])
        self.upper = np.array([s.upper for s in template.params])
        self._fn = compile_reward(template)
        #: feature names the template reads (the parser allows only constant f['name'] keys)
        self.used_features: tuple[str, ...] = used_features(template)

    def theta_dict(self, theta: Theta | None) -> dict[str, float]:
        """θ as {name: float}; None -> initial values. Raises ValueError naming a bad entry."""
        if theta is None:
            return self.template.initial_theta()
        if isinstance(theta, Mapping):
            unknown = [k for k in theta if k not in self.param_names]
            missing = [k for k in self.param_names if k not in theta]
            if unknown or missing:
                raise ValueError(f'theta has unknown names {unknown} / misses {missing}; '
                                 f'parameters are {self.param_names}')
            return {k: float(theta[k]) for k in self.param_names}
        arr = np.asarray(theta, dtype=np.float64).reshape(-1)
        if arr.shape[0] != len(self.param_names):
            raise ValueError(f'theta has {arr.shape[0]} values, expected '
                             f'{len(self.param_names)} in the order {self.param_names}')
        return dict(zip(self.param_names, arr.tolist()))

    def theta_array(self, theta: Theta | None) -> np.ndarray:
        """θ as float64 array in parameter order."""
        d = self.theta_dict(theta)
        return np.array([d[k] for k in self.param_names], dtype=np.float64)

    def prepare(self, features: np.ndarray | Mapping[str, np.ndarray] | PreparedBatch,
                contiguous: bool = False, relative_to_start: bool = False) -> PreparedBatch:
        """Packed (..., FEATURE_DIM) or a feature dict with leading axes -> PreparedBatch.

        Only the features the template reads (``used_features``) are kept. ``contiguous`` copies
        each into its own contiguous array: column views of a packed array are strided, which
        makes elementwise numpy several times slower — worth it when the batch is evaluated
        many times (Metropolis–Hastings), not for a single call. ``relative_to_start``
        (episodes (N, T) only) keeps each episode's first step too: ``episode_returns`` and
        ``episode_returns_many`` then give returns relative to the start
        (``PreparedBatch.start``; docs/method.md "Outer loop").
        """
        if isinstance(features, PreparedBatch):
            if relative_to_start and features.start is None:
                return self._with_start(features)
            return features
        if isinstance(features, Mapping):
            missing = [n for n in self.used_features if n not in features]
            if missing:
                raise ValueError(f'feature dict misses {missing}; use features.compute_features')
            name = self.used_features[0] if self.used_features else F.FEATURE_NAMES[0]
            shape = np.asarray(features[name]).shape
            lead = shape[:len(shape) - len(F.BY_NAME[name].shape)]
            flat = {n: np.asarray(features[n]).reshape(-1, *F.BY_NAME[n].shape)
                    for n in self.used_features}
        else:
            packed = np.asarray(features, dtype=np.float32)
            if packed.ndim < 1 or packed.shape[-1] != F.FEATURE_DIM:
                raise ValueError(f'packed features have shape {packed.shape}, expected '
                                 f'(..., {F.FEATURE_DIM})')
            lead = packed.shape[:-1]
            flat2d = packed.reshape(-1, F.FEATURE_DIM)
            flat = {n: flat2d[:, F.LAYOUT[n]].reshape(-1, *F.BY_NAME[n].shape)
                    for n in self.used_features}
        if contiguous:
            flat = {k: np.ascontiguousarray(v) for k, v in flat.items()}
        batch = PreparedBatch(flat, tuple(int(d) for d in lead))
        return self._with_start(batch) if relative_to_start else batch

    @staticmethod
    def _with_start(batch: PreparedBatch) -> PreparedBatch:
        """``batch`` with ``start``: the first step of each of its (N, T) episodes."""
        if len(batch.lead) != 2:
            raise ValueError(f'returns relative to the start need (N, T, FEATURE_DIM) episodes, '
                             f'got leading shape {batch.lead}')
        n, t = batch.lead
        first = {k: np.ascontiguousarray(v.reshape(n, t, *v.shape[1:])[:, 0])
                 for k, v in batch.features.items()}
        return PreparedBatch(batch.features, batch.lead, PreparedBatch(first, (n, 1)))

    def _run(self, batch: PreparedBatch, theta: dict[str, float]
             ) -> tuple[np.ndarray, dict[str, Any]]:
        # Fresh read-only views each call: templates cannot corrupt the batch.
        with np.errstate(all='ignore'):
            try:
                out = self._fn(readonly_features(batch.features), dict(theta))
            except Exception as exc:  # noqa: BLE001 - LLM code failing on real data
                raise RewardRuntimeError(f'reward raised {type(exc).__name__}: {exc} '
                                         f'(theta={theta})') from exc
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise RewardRuntimeError('reward did not return (total, terms_dict)')
        total = np.asarray(out[0], dtype=np.float64)
        if total.shape != (batch.size,):
            raise RewardRuntimeError(f'reward total has shape {total.shape}, expected '
                                     f'({batch.size},)')
        return self._finite(total, 'total', theta), out[1]

    def _finite(self, arr: np.ndarray, what: str, theta: dict[str, float]) -> np.ndarray:
        ok = np.isfinite(arr)
        if ok.all():
            return arr
        bad = int(arr.size - ok.sum())
        if self.nonfinite == 'raise':
            raise RewardRuntimeError(f'reward {what} is NaN/inf in {bad} of {arr.size} rows at '
                                     f'theta={theta}')
        self.nonfinite_count += bad
        return np.where(ok, arr, 0.0)

    def __call__(self, features: np.ndarray | Mapping[str, np.ndarray] | PreparedBatch,
                 theta: Theta | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """R_θ per transition: total (...,) float64 and terms {name: (...,) float64}.

        ``features``: packed (..., FEATURE_DIM), a feature dict, or ``prepare``'s result.
        """
        batch = self.prepare(features)
        th = self.theta_dict(theta)
        total, raw_terms = self._run(batch, th)
        terms = {}
        for name, value in raw_terms.items():
            arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (batch.size,))
            terms[str(name)] = self._finite(arr, f'term {name!r}', th).reshape(batch.lead)
        return total.reshape(batch.lead), terms

    def total(self, features: np.ndarray | Mapping[str, np.ndarray] | PreparedBatch,
              theta: Theta | None = None) -> np.ndarray:
        """Only the total reward (...,) float64 (skips the per-term checks; the fast path)."""
        batch = self.prepare(features)
        total, _ = self._run(batch, self.theta_dict(theta))
        return total.reshape(batch.lead)

    def episode_returns(self, packed: np.ndarray | PreparedBatch, theta: Theta | None = None,
                        discount: float = 1.0) -> np.ndarray:
        """Returns of N episodes: packed (N, T, FEATURE_DIM) (or prepared) -> (N,) float64.

        ``discount`` < 1 weights step t by discount**t (default: undiscounted sum).
        """
        batch = self.prepare(packed)
        if len(batch.lead) != 2:
            raise ValueError(f'episode_returns needs (N, T, FEATURE_DIM) features, got leading '
                             f'shape {batch.lead}')
        th = self.theta_dict(theta)
        total, _ = self._run(batch, th)
        per_step = total.reshape(batch.lead)
        if batch.start is not None:  # relative to the start: r_t − r_0
            per_step = per_step - self._run(batch.start, th)[0][:, None]
        if discount == 1.0:
            return per_step.sum(axis=1)
        return per_step @ (discount ** np.arange(batch.lead[1]))

    def episode_returns_many(self, batch: PreparedBatch, thetas: np.ndarray) -> np.ndarray:
        """Returns of N episodes under C parameter vectors at once: (C, p) -> (C, N).

        The template runs once with every parameter as a (C, 1) array and every feature with a
        leading axis of 1, so elementwise code broadcasts to (C, N*T). Not every template
        broadcasts correctly (Python ``max`` on arrays, reductions without an axis); callers
        check ``broadcasts_over_theta`` first. Raises RewardRuntimeError on errors or bad shapes.
        """
        thetas = np.asarray(thetas, dtype=np.float64)
        if batch.lead is None or len(batch.lead) != 2:
            raise ValueError('episode_returns_many needs episodes prepared as (N, T, ...)')
        per_step = self._totals_many(batch, thetas).reshape(thetas.shape[0], *batch.lead)
        if batch.start is not None:  # relative to the start: r_t − r_0
            per_step = per_step - self._totals_many(batch.start, thetas)[:, :, None]
        return per_step.sum(axis=2)  # non-finite rows stay non-finite

    def _totals_many(self, batch: PreparedBatch, thetas: np.ndarray) -> np.ndarray:
        """Per-step totals of ``batch`` under C parameter vectors: (C, batch.size)."""
        c = thetas.shape[0]
        f = readonly_features({k: v[None] for k, v in batch.features.items()})
        # float32 like the features: float64 θ arrays would upcast every elementwise op (the
        # one-θ path passes Python floats, which NumPy treats as weak and keeps float32)
        p = {n: thetas[:, j:j + 1].astype(np.float32) for j, n in enumerate(self.param_names)}
        with np.errstate(all='ignore'):
            try:
                out = self._fn(f, p)
                total = np.asarray(out[0], dtype=np.float64)
            except Exception as exc:  # noqa: BLE001 - LLM code that does not broadcast
                raise RewardRuntimeError(f'reward raised {type(exc).__name__}: {exc} with '
                                         'batched parameters') from exc
        if total.shape != (c, batch.size):
            raise RewardRuntimeError(f'batched reward total has shape {total.shape}, expected '
                                     f'({c}, {batch.size})')
        if self.nonfinite == 'zero':  # same per-step policy as the one-θ path
            bad = ~np.isfinite(total)
            self.nonfinite_count += int(bad.sum())
            total = np.where(bad, 0.0, total)
        return total

    def broadcasts_over_theta(self, batch: PreparedBatch, thetas: np.ndarray) -> bool:
        """True when ``episode_returns_many`` equals one-θ-at-a-time evaluation at ``thetas``."""
        try:
            many = self.episode_returns_many(batch, thetas)
            one = np.stack([self.episode_returns(batch, dict(zip(self.param_names, t)))
                            for t in np.asarray(thetas, dtype=np.float64).tolist()])
        except RewardRuntimeError:
            return False
        return bool(np.allclose(many, one, rtol=1e-4, atol=1e-6, equal_nan=True))

    def episode_term_returns(self, packed: np.ndarray | PreparedBatch,
                             theta: Theta | None = None) -> dict[str, np.ndarray]:
        """Per-term undiscounted returns {term: (N,)} of N episodes (for reports and prompts)."""
        batch = self.prepare(packed)
        _, terms = self(batch, theta)
        return {k: v.reshape(batch.lead).sum(axis=1) for k, v in terms.items()}
