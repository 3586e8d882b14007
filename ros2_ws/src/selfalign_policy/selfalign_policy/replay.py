"""Preallocated replay buffer with n-step returns re-scored from stored reward features.

Layout: a ring of time-step *slots*. A slot holds one observation o_t (a single frame for
pixels: frames are stored once and the frame stack is assembled at sample time) and, when the
episode went on from it, the transition leaving it: action a_t, the packed reward-input features
of the step it led to (``selfalign_core.features.pack``, FEATURE_DIM floats) and whether that
step terminated the episode. An episode of T steps uses T + 1 slots.

Rewards are not stored. ``sample`` evaluates ``reward_fn(packed (K, FEATURE_DIM)) -> (K,)`` on
the features of each of the n steps of every sampled window, so a new reward (a new theta)
re-scores the whole buffer at once, and the n-step return uses each step's own reward.
n-step windows stop at the episode end (never cross episodes): a window that reaches a
termination gets discount 0, one that reaches a time limit bootstraps from the final observation
with gamma^k for the k steps it has. Windows of an episode still running are sampled only once
n steps exist. All arrays are allocated in ``__init__``; ``nbytes`` is the whole footprint.
With ``keep_reward_scale`` the sampled returns are multiplied by ``reward_scale``: 1 for the
first reward, and when ``set_reward_fn`` brings a new one (a θ update), rescaled so that the new
reward has the old one's standard deviation over the stored transitions (``rescale_for``). The
critic's targets then stay at one scale whatever θ does, while a fixed reward trains unscaled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from selfalign_core.features import FEATURE_DIM

#: Stored transitions the reward scale is measured on when the reward changes.
SCALE_ROWS = 10_000

RewardFn = Callable[[np.ndarray], np.ndarray]


def slot_bytes(frame_shape: tuple[int, ...], action_dim: int, feature_dim: int = FEATURE_DIM,
               obs_dtype: Any = None) -> int:
    """Bytes one replay slot takes (an observation, its action, features and bookkeeping)."""
    if obs_dtype is None:
        obs_dtype = np.uint8 if len(frame_shape) == 3 else np.float32
    obs = int(np.prod(frame_shape)) * np.dtype(obs_dtype).itemsize
    return obs + 4 * int(action_dim) + 4 * int(feature_dim) + 3 + 8 + 8


def capacity_for_memory(memory_mb: float, frame_shape: tuple[int, ...], action_dim: int,
                        feature_dim: int = FEATURE_DIM, obs_dtype: Any = None) -> int:
    """Slots that fit in ``memory_mb`` MiB (the sample buffers come on top: a few MB)."""
    per = slot_bytes(frame_shape, action_dim, feature_dim, obs_dtype)
    return int(float(memory_mb) * 2**20 // per)


class Batch(NamedTuple):
    """A sampled batch (numpy views of buffers reused by the next ``sample`` call)."""

    obs: np.ndarray
    """(B, *obs_shape): uint8 (B, S*C, H, W) for pixels, float32 (B, D) for state."""
    action: np.ndarray
    """float32 (B, A) in [-1, 1]."""
    reward: np.ndarray
    """float32 (B, 1): sum_k gamma^k r_{t+k} over the window."""
    discount: np.ndarray
    """float32 (B, 1): gamma^k for a window of k steps, 0 if it ends in a termination."""
    next_obs: np.ndarray
    """(B, *obs_shape), the observation the window bootstraps from."""


class ReplayBuffer:
    """Ring buffer of time steps; see the module docstring for the layout.

    Args:
        frame_shape: shape of one observation from the env: (C, H, W) pixels, (D,) state.
        action_dim: A.
        capacity: slots (transitions + one final observation per episode).
        nstep: n of the n-step return.
        discount: gamma.
        batch_size: B (the output buffers are preallocated for it).
        frame_stack: S, frames per pixel observation (1 for state).
        obs_dtype: dtype of stored observations (uint8 pixels, float32 state by default).
        feature_dim: columns of the stored reward features.
        reward_fn: packed features (K, feature_dim) -> rewards (K,); settable later.
        keep_reward_scale: rescale a new reward to the old one's std (``rescale_for``).
        seed: seed of the sampler's own ``np.random.Generator``.
    """

    def __init__(self, frame_shape: tuple[int, ...], action_dim: int, capacity: int,
                 nstep: int, discount: float, batch_size: int, frame_stack: int = 1,
                 obs_dtype: Any = None, feature_dim: int = FEATURE_DIM,
                 reward_fn: RewardFn | None = None, seed: int = 0,
                 keep_reward_scale: bool = False) -> None:
        frame_shape = tuple(int(s) for s in frame_shape)
        if len(frame_shape) not in (1, 3):
            raise ValueError(f'frame_shape {frame_shape} must be (D,) for state or (C, H, W) '
                             'for pixels')
        self.pixels = len(frame_shape) == 3
        self.frame_stack = int(frame_stack) if self.pixels else 1
        if capacity < 2 * (nstep + self.frame_stack):
            raise ValueError(f'capacity {capacity} too small for nstep {nstep} and frame_stack '
                             f'{self.frame_stack}; use at least a few episodes worth of steps')
        if obs_dtype is None:
            obs_dtype = np.uint8 if self.pixels else np.float32
        self.frame_shape = frame_shape
        self.action_dim = int(action_dim)
        self.capacity = int(capacity)
        self.nstep = int(nstep)
        self.gamma = float(discount)
        self.batch_size = int(batch_size)
        self.feature_dim = int(feature_dim)
        self.reward_fn = reward_fn
        self.rng = np.random.default_rng(seed)
        self.keep_reward_scale = bool(keep_reward_scale)
        self.reward_scale = 1.0   # sampled rewards are multiplied by this
        cap = self.capacity
        # Storage (zeros: stale slots must never hold NaN that a reward_fn could trip on).
        self._frames = np.zeros((cap, *frame_shape), dtype=obs_dtype)
        self._action = np.zeros((cap, self.action_dim), dtype=np.float32)
        self._features = np.zeros((cap, self.feature_dim), dtype=np.float32)
        self._has_tr = np.zeros(cap, dtype=bool)      # a transition leaves this slot
        self._terminal = np.zeros(cap, dtype=bool)    # ... and it terminated the episode
        self._final = np.zeros(cap, dtype=bool)       # last observation of an ended episode
        self._t = np.zeros(cap, dtype=np.int64)       # step index within the episode
        self._ep = np.full(cap, -1, dtype=np.int64)   # episode id
        # Sample outputs, preallocated for batch_size.
        b, s = self.batch_size, self.frame_stack
        self._out_obs = np.zeros((b, s, *frame_shape), dtype=obs_dtype)
        self._out_next = np.zeros((b, s, *frame_shape), dtype=obs_dtype)
        self._out_action = np.zeros((b, self.action_dim), dtype=np.float32)
        self._powers = self.gamma ** np.arange(self.nstep + 1, dtype=np.float64)
        self._steps = np.arange(self.nstep)
        self._lags = np.arange(s - 1, -1, -1)         # oldest frame first
        # Cursor state.
        self._cursor = 0          # slot of the current (latest) observation
        self._written = 0         # slots ever written
        self._episode = -1        # id of the episode being written
        self._open = False        # an episode is being written

    # ------------------------------------------------------------------ properties
    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one sampled observation: (S*C, H, W) for pixels, (D,) for state."""
        if self.pixels:
            c, h, w = self.frame_shape
            return (self.frame_stack * c, h, w)
        return self.frame_shape

    @property
    def nbytes(self) -> int:
        """Bytes of every preallocated array (storage + sample outputs)."""
        arrays = (self._frames, self._action, self._features, self._has_tr, self._terminal,
                  self._final, self._t, self._ep, self._out_obs, self._out_next,
                  self._out_action)
        return int(sum(a.nbytes for a in arrays))

    def __len__(self) -> int:
        """Transitions currently stored."""
        return int(self._has_tr.sum())

    def set_reward_fn(self, reward_fn: RewardFn) -> None:
        """Replace the reward; every later ``sample`` re-scores the whole buffer with it (with
        ``keep_reward_scale``, at the old reward's scale: ``rescale_for``)."""
        if self.keep_reward_scale and self.reward_fn is not None:
            self.rescale_for(reward_fn)
        self.reward_fn = reward_fn

    def rescale_for(self, new_fn: RewardFn, rows: int = SCALE_ROWS) -> float:
        """``reward_scale`` *= std(old reward) / std(new reward) over up to ``rows`` stored
        transitions (the same rows for both), so the scaled new reward spreads like the scaled
        old one. Unchanged when nothing is stored or either reward is constant or non-finite
        there. The rows are drawn by a generator seeded from the write count: the sampler is
        not disturbed and a resumed run gets the same value."""
        slots = np.flatnonzero(self._has_tr)
        if slots.size == 0 or self.reward_fn is None:
            return self.reward_scale
        if slots.size > rows:
            slots = np.random.default_rng(self._written).choice(slots, rows, replace=False)
        feats = self._features[slots]
        old = np.asarray(self.reward_fn(feats), dtype=np.float64)
        new = np.asarray(new_fn(feats), dtype=np.float64)
        if np.isfinite(old).all() and np.isfinite(new).all():
            s_old, s_new = float(old.std()), float(new.std())
            if s_old > 1e-8 and s_new > 1e-8:
                self.reward_scale *= s_old / s_new
        return self.reward_scale

    # ------------------------------------------------------------------ writing
    def _write_obs(self, slot: int, obs: np.ndarray, t: int) -> None:
        self._frames[slot] = obs
        self._has_tr[slot] = False
        self._terminal[slot] = False
        self._final[slot] = False
        self._t[slot] = t
        self._ep[slot] = self._episode

    def add_first(self, obs: np.ndarray) -> None:
        """Start an episode with its first observation o_0 (frame_shape)."""
        if self._open:  # an unfinished episode is dropped from sampling by leaving it open
            self._cursor = (self._cursor + 1) % self.capacity
        elif self._written:
            self._cursor = (self._cursor + 1) % self.capacity
        self._episode += 1
        self._write_obs(self._cursor, obs, 0)
        self._written += 1
        self._open = True

    def add(self, action: np.ndarray, features: np.ndarray, next_obs: np.ndarray,
            terminated: bool, truncated: bool) -> None:
        """Record a_t, the packed features of step t+1 (feature_dim,) and o_{t+1}.

        ``terminated``: the episode ended in an absorbing state (discount 0); ``truncated``:
        a time limit (bootstrap). Either ends the episode; the next call must be ``add_first``.
        """
        if not self._open:
            raise RuntimeError('ReplayBuffer.add before add_first: start each episode with '
                               'add_first(obs)')
        cur = self._cursor
        self._action[cur] = action
        self._features[cur] = features
        self._terminal[cur] = bool(terminated)
        t = int(self._t[cur])
        nxt = (cur + 1) % self.capacity
        self._write_obs(nxt, next_obs, t + 1)
        self._has_tr[cur] = True
        self._written += 1
        self._cursor = nxt
        if terminated or truncated:
            self._final[nxt] = True
            self._open = False

    # ------------------------------------------------------------------ sampling
    def _window(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For start slots idx (K,): (step slots (K, n), step mask (K, n), valid (K,))."""
        cap = self.capacity
        slots = (idx[:, None] + self._steps) % cap
        same = (self._ep[slots] == self._ep[idx][:, None]) & self._has_tr[slots]
        mask = np.cumprod(same, axis=1, dtype=bool)
        n_eff = mask.sum(axis=1)
        end = (idx + n_eff) % cap
        valid = self._has_tr[idx] & ((n_eff == self.nstep) | self._final[end])
        # Frame stack of the start must not have been overwritten by the ring.
        if self.frame_stack > 1:
            lag = np.minimum(self.frame_stack - 1, self._t[idx])
            first = (idx - lag) % cap
            valid &= (self._ep[first] == self._ep[idx]) & (self._t[first] == self._t[idx] - lag)
        return slots, mask, valid

    def _sample_starts(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = min(self._written, self.capacity)
        if len(self) == 0:
            raise RuntimeError('ReplayBuffer.sample on an empty buffer: add an episode first')
        chosen, slots_l, mask_l, got = [], [], [], 0
        for _ in range(1000):
            idx = self.rng.integers(0, size, size=2 * (batch - got) + 8)
            slots, mask, valid = self._window(idx)
            chosen.append(idx[valid])
            slots_l.append(slots[valid])
            mask_l.append(mask[valid])
            got += int(valid.sum())
            if got >= batch:
                break
        else:
            raise RuntimeError('ReplayBuffer.sample found no complete n-step window; store '
                               f'at least {self.nstep} steps of an episode first')
        return (np.concatenate(chosen)[:batch], np.concatenate(slots_l)[:batch],
                np.concatenate(mask_l)[:batch])

    def _stack(self, slots: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Frames of the stacks ending at slots (B,) into out (B, S, *frame) -> obs (B, ...)."""
        b = len(slots)
        if self.frame_stack == 1:
            np.take(self._frames, slots, axis=0, out=out[:b, 0], mode='wrap')
            return out[:b, 0]
        lag = np.minimum(self._lags[None, :], self._t[slots][:, None])  # repeat the first frame
        idx = (slots[:, None] - lag) % self.capacity
        np.take(self._frames, idx.ravel(), axis=0, mode='wrap',
                out=out[:b].reshape(b * self.frame_stack, *self.frame_shape))
        return out[:b].reshape(b, *self.obs_shape)

    def sample(self, batch_size: int | None = None) -> Batch:
        """Uniform over stored transitions; rewards from ``reward_fn`` on the stored features."""
        if self.reward_fn is None:
            raise RuntimeError('ReplayBuffer has no reward_fn: call set_reward_fn(fn) with '
                               'fn(packed (K, FEATURE_DIM)) -> (K,)')
        b = self.batch_size if batch_size is None else int(batch_size)
        if b > self.batch_size:
            raise ValueError(f'batch_size {b} exceeds the preallocated {self.batch_size}')
        idx, slots, mask = self._sample_starts(b)
        n_eff = mask.sum(axis=1)
        rewards = np.zeros(mask.shape, dtype=np.float64)
        step_r = np.asarray(self.reward_fn(self._features[slots[mask]]), dtype=np.float64)
        if step_r.shape != (int(mask.sum()),):
            raise ValueError(f'reward_fn returned shape {step_r.shape}, expected '
                             f'({int(mask.sum())},): one reward per feature row')
        rewards[mask] = step_r
        reward = (rewards @ self._powers[:-1]) * self.reward_scale
        last = slots[np.arange(b), n_eff - 1]
        discount = self._powers[n_eff] * ~self._terminal[last]
        end = (idx + n_eff) % self.capacity
        np.take(self._action, idx, axis=0, out=self._out_action[:b], mode='wrap')
        return Batch(obs=self._stack(idx, self._out_obs),
                     action=self._out_action[:b],
                     reward=reward.astype(np.float32)[:, None],
                     discount=discount.astype(np.float32)[:, None],
                     next_obs=self._stack(end, self._out_next))

    def stacked_obs(self, frames: list[np.ndarray]) -> np.ndarray:
        """The policy's observation from the latest frames of an episode (oldest first).

        Repeats the first frame while the episode is younger than the stack (like dm_control's
        FrameStack at reset); state observations pass through.
        """
        if not self.pixels:
            return np.asarray(frames[-1])
        s = self.frame_stack
        picked = [frames[max(len(frames) - s + k, 0)] for k in range(s)]
        return np.concatenate(picked, axis=0)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue sampling identically (arrays are not copied)."""
        return {
            'frames': self._frames, 'action': self._action, 'features': self._features,
            'has_tr': self._has_tr, 'terminal': self._terminal, 'final': self._final,
            't': self._t, 'ep': self._ep, 'cursor': self._cursor, 'written': self._written,
            'episode': self._episode, 'open': self._open,
            'rng': self.rng.bit_generator.state,
            'reward_scale': self.reward_scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ('frames', 'action', 'features', 'has_tr', 'terminal', 'final', 't', 'ep'):
            dst = getattr(self, '_' + name)
            src = np.asarray(state[name])
            if src.shape != dst.shape:
                raise ValueError(f'replay checkpoint field {name!r} has shape {src.shape}, this '
                                 f'buffer {dst.shape}: build the buffer with the same capacity '
                                 'and observation shape')
            dst[...] = src
        self._cursor = int(state['cursor'])
        self._written = int(state['written'])
        self._episode = int(state['episode'])
        self._open = bool(state['open'])
        self.rng.bit_generator.state = state['rng']
        self.reward_scale = float(state.get('reward_scale', 1.0))

    def memory_report(self) -> str:
        return (f'replay: {self.capacity} slots of {self.frame_shape} '
                f'{self._frames.dtype} (+ stack {self.frame_stack} at sample time), '
                f'{self.nbytes / 2**20:.1f} MiB preallocated')
