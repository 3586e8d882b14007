"""EpisodeRecord: one finished episode with the reward-input features of every step.

The pure-numpy form of ``selfalign_interfaces/Episode`` (conversion in ``selfalign_reward.msgs``).
Episodes are what the LLM ranks and what Metropolis–Hastings re-scores under each θ, so they keep
the packed features (``features.pack`` layout) rather than rewards alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from selfalign_core import features as F


@dataclass
class EpisodeRecord:
    """One episode of T control steps.

    Attributes:
        task: task name ('touch', 'grasp_lift', 'push').
        features: float32 (T, FEATURE_DIM), ``features.pack`` layout.
        actions: float32 (T, A) in [-1, 1] (A = 4: dx, dy, dz, gripper).
        rewards: float32 (T,), the reward under ``reward_version`` while the episode ran.
        success_flags: bool (T,), per-step task success condition.
        success: task success at episode end (docs/method.md "Task success").
        block_rest_z: block centre height at rest, m.
        seed: reset seed of the episode.
        episode_index: running episode count of the run.
        env_step: environment steps of the run when the episode ended.
        reward_version: RewardSpec.version in force during the episode.
        evaluation: deterministic evaluation episode.
        worker: the arm that played it ('' for a run with one; arm_0 ... with workers).
    """

    task: str
    features: np.ndarray
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    success_flags: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    success: bool = False
    block_rest_z: float = 0.0
    seed: int = 0
    episode_index: int = 0
    env_step: int = 0
    reward_version: int = 0
    evaluation: bool = False
    worker: str = ''

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.features.ndim != 2 or self.features.shape[1] != F.FEATURE_DIM:
            raise ValueError(f'EpisodeRecord.features has shape {self.features.shape}, expected '
                             f'(T, {F.FEATURE_DIM}) (features.pack layout)')
        t = self.features.shape[0]
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.actions.size == 0:
            self.actions = np.zeros((t, 4), np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        if self.rewards.size == 0:
            self.rewards = np.zeros(t, np.float32)
        self.success_flags = np.asarray(self.success_flags, dtype=bool).reshape(-1)
        if self.success_flags.size == 0:
            self.success_flags = np.zeros(t, bool)
        for name, arr in (('actions', self.actions), ('rewards', self.rewards),
                          ('success_flags', self.success_flags)):
            if arr.shape[0] != t:
                raise ValueError(f'EpisodeRecord.{name} has {arr.shape[0]} steps, features have '
                                 f'{t}; record one row per control step')
        if self.actions.ndim != 2:
            raise ValueError(f'EpisodeRecord.actions has shape {self.actions.shape}, expected '
                             '(T, A)')

    @property
    def num_steps(self) -> int:
        """T, the number of control steps."""
        return int(self.features.shape[0])

    def feature_dict(self) -> dict[str, np.ndarray]:
        """Features as a dict of views: scalars (T,), vectors (T, 3)."""
        return F.unpack(self.features)


def stack_features(episodes: list[EpisodeRecord], steps: int | None = None) -> np.ndarray:
    """Packed features of N episodes as (N, T, FEATURE_DIM) float32.

    T is the longest episode (or ``steps``). Shorter episodes are padded by repeating their last
    row (an absorbing final state), longer ones cut, so returns over the set stay comparable.
    """
    if not episodes:
        raise ValueError('stack_features needs at least one episode')
    t = max(e.num_steps for e in episodes) if steps is None else int(steps)
    if t <= 0 or any(e.num_steps == 0 for e in episodes):
        raise ValueError('episodes must have at least one step')
    out = np.empty((len(episodes), t, F.FEATURE_DIM), dtype=np.float32)
    for i, e in enumerate(episodes):
        n = min(t, e.num_steps)
        out[i, :n] = e.features[:n]
        out[i, n:] = e.features[n - 1]
    return out
