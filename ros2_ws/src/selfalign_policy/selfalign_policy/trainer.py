"""The DrQ-v2 training loop over any gymnasium-style env (pure: no rclpy, no simulator import).

The env is passed in: the sim's gym envs (``selfalign_bringup.sim``), or the policy node's
robot-contract env. Contract the loop relies on: ``reset(seed=..., options=...) -> (obs, info)``
(options ``{'evaluation': bool, 'eval_index': int}``, which an env may ignore);
``step(action (A,) in [-1, 1]) -> (obs, reward, terminated, truncated, info)`` with
``info['features']`` the packed reward-input features of the step (FEATURE_DIM,), optionally
``info['success']`` (per-step task condition), ``info['is_success']``, ``info['block_rest_z']``,
``info['stamp_ns']`` (the driver-clock stamp of the state: the episode's extra then carries
``start_stamp_ns`` / ``end_stamp_ns`` and ``stamps_ns``, the stamp of the reset state and of
each step's).
The env's own reward is ignored: rewards come from ``reward_fn(packed (K, FEATURE_DIM)) -> (K,)``
at replay-sample time, so ``set_reward_fn`` re-scores everything stored.
Pixel envs return one frame (C, H, W); the loop stacks ``replay.frame_stack`` of them.

Workers: ``env`` may be a list of N envs (N arms, simulated or real). Each round plays one
episode on every worker at once: one batched forward pass picks the N actions, an env with
``step_async(action)`` / ``step_wait()`` (the robot-contract env) gets all N commands before
any state is awaited, so N drivers step in parallel; others are stepped one after the other.
With such envs the updates a step makes due run while the next commands are out
(``TrainerConfig.overlap_updates``): driver and learner work at the same time.
Every env step counts, and updates interleave as with one env (``update_every_steps`` env steps
per update), so the update-to-data ratio does not depend on N. With N > 1 a worker's
transitions reach the replay when its episode ends (as in the reference DrQ-v2, which stores
whole episodes), so the n-step windows of the N episodes never interleave. Episode records
carry the worker's name.

Seeding: episode k of training resets with seed ``seed * 1_000_003 + k``, evaluation episode j
of evaluation round r with ``10**9 + seed * 1_000_003 + r * 1000 + j``; with the global RNGs and
the replay sampler in the checkpoint, a resume continues the same run (checkpoints are taken at
episode ends, where no simulator state needs saving).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
import math
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

from selfalign_core.features import unpack
from selfalign_core.names import worker_name
from selfalign_core.tasks import episode_success, TASKS
from selfalign_policy.agent import DrQV2Agent
from selfalign_policy.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from selfalign_policy.config import DrQV2Config
from selfalign_policy.replay import ReplayBuffer, RewardFn

CHECKPOINT_NAME = 'checkpoint.pt'


class EpisodeAbortedError(RuntimeError):
    """An env's ``reset``/``step`` says this episode cannot go on (the robot went silent or
    restarted mid-episode). The trainer drops the partial episode (the replay keeps its complete
    n-step windows, real transitions; the cut-off tail is never sampled; no callbacks, no
    episode index) and plays the episode again with the same seed."""


@dataclass
class EpisodeData:
    """One finished episode; field names match ``selfalign_core.episode.EpisodeRecord``."""

    task: str
    features: np.ndarray
    """float32 (T, FEATURE_DIM), packed reward-input features of steps 1..T."""
    actions: np.ndarray
    """float32 (T, A)."""
    rewards: np.ndarray
    """float32 (T,), under the reward in force at the episode end."""
    success_flags: np.ndarray
    """bool (T,), the per-step task condition (info['success']; False if absent)."""
    success: bool
    block_rest_z: float
    seed: int
    episode_index: int
    env_step: int
    reward_version: int = 0
    evaluation: bool = False
    worker: str = ''
    """Name of the worker (arm) that played it ('' with a single env)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Not part of EpisodeRecord: e.g. the episode return, wall time."""

    def record_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``EpisodeRecord(**...)``."""
        return {k: getattr(self, k) for k in (
            'task', 'features', 'actions', 'rewards', 'success_flags', 'success',
            'block_rest_z', 'seed', 'episode_index', 'env_step', 'reward_version', 'evaluation',
            'worker')}


@dataclass
class _Playing:
    """One worker's episode in progress."""

    worker: int
    index: int
    """Training: the episode index; evaluation: the index within the round."""
    seed: int
    frames: deque
    start_stamp_ns: int | None
    stamps: list
    start: float
    feats: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    flags: list = field(default_factory=list)
    staged: list = field(default_factory=list)
    """N > 1: (action, features, obs, terminated, truncated) not yet in the replay."""
    first_obs: Any = None


@dataclass
class Callbacks:
    """Optional hooks; each gets plain data and must not block for long."""

    on_episode_end: Callable[[EpisodeData], None] | None = None
    on_eval: Callable[[dict[str, float]], None] | None = None
    on_update: Callable[[int, dict[str, float]], None] | None = None
    """(env_step, metrics) every ``metrics_every_updates`` updates."""
    should_stop: Callable[[], bool] | None = None
    """Polled after every env step; True ends training at once (no checkpoint)."""


class Trainer:
    """Owns agent + replay and runs episodes on ``env``.

    Args:
        env: gymnasium-style env (see module docstring), or a list of N of them (workers).
        cfg: DrQV2Config.
        reward_fn: packed features (K, FEATURE_DIM) -> (K,) rewards.
        task: task name stored in EpisodeData.
        callbacks: optional hooks.
        reward_version: stored in EpisodeData; bump it with ``set_reward_fn``.
        worker_names: one name per env, stored in EpisodeData.worker (default: '' for a
            single env, arm_0 ... arm_{N-1} for N).
    """

    def __init__(self, env: Any, cfg: DrQV2Config, reward_fn: RewardFn, task: str = '',
                 callbacks: Callbacks | None = None, reward_version: int = 0,
                 worker_names: list[str] | None = None) -> None:
        self.envs = list(env) if isinstance(env, (list, tuple)) else [env]
        if not self.envs:
            raise ValueError('Trainer needs at least one env')
        env = self.env = self.envs[0]
        n = len(self.envs)
        self.worker_names = (list(worker_names) if worker_names is not None
                             else [''] if n == 1 else [worker_name(i) for i in range(n)])
        if len(self.worker_names) != n:
            raise ValueError(f'{len(self.worker_names)} worker names for {n} envs')
        #: envs that take a command (step_async) and hand its state over later (step_wait)
        self._split = [callable(getattr(e, 'step_async', None))
                       and callable(getattr(e, 'step_wait', None)) for e in self.envs]
        #: run the updates a step made due while the next commands are out (every env split)
        self._overlap = cfg.trainer.overlap_updates and all(self._split)
        self._due = 0  # updates due but not yet run (overlap only; none across _play calls)
        self.cfg = cfg
        self.task = task
        self.callbacks = callbacks or Callbacks()
        seed_everything(cfg.trainer.seed)
        obs_space, act_space = env.observation_space, env.action_space
        frame_shape = tuple(obs_space.shape)
        if len(act_space.shape) != 1:
            raise ValueError(f'action space shape {act_space.shape} must be (A,)')
        if not (np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0)):
            raise ValueError('the action space must be Box(-1, 1): rescale in the env/driver')
        self.action_dim = int(act_space.shape[0])
        self.replay = ReplayBuffer(
            frame_shape, self.action_dim, cfg.replay.capacity, cfg.agent.nstep,
            cfg.agent.discount, cfg.agent.batch_size, frame_stack=cfg.replay.frame_stack,
            obs_dtype=obs_space.dtype, reward_fn=reward_fn, seed=cfg.trainer.seed,
            keep_reward_scale=cfg.replay.keep_reward_scale)
        self.agent = DrQV2Agent(self.replay.obs_shape, self.action_dim, cfg.agent)
        self.reward_fn = reward_fn
        self.reward_version = reward_version
        self.env_step = 0
        self.episode_index = 0
        """Index of the next new training episode (its seed follows from it)."""
        self._retry: list[int] = []
        """Training episode indices aborted by their env, played again first (same seeds)."""
        self.update_count = 0
        self.eval_round = 0
        self.aborted_episodes = 0
        self.next_eval = cfg.trainer.eval_every_steps or math.inf
        self.next_checkpoint = cfg.trainer.checkpoint_every_steps or math.inf
        self.last_metrics: dict[str, float] = {}
        self.eval_history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ reward
    def set_reward_fn(self, reward_fn: RewardFn, version: int | None = None) -> None:
        """New reward (e.g. new theta): the replay is re-scored from the next update on."""
        self.reward_fn = reward_fn
        self.replay.set_reward_fn(reward_fn)
        self.reward_version = self.reward_version + 1 if version is None else int(version)

    # ------------------------------------------------------------------ episodes
    def _episode_seed(self, evaluation: bool, j: int) -> int:
        base = self.cfg.trainer.seed * 1_000_003
        if evaluation:
            return 10**9 + base + self.eval_round * 1000 + j
        return base + j

    def run_episode(self, evaluation: bool = False, eval_index: int = 0) -> EpisodeData:
        """Play one episode on the first env (a training episode is stored and interleaved
        with updates); an aborted one is played again with its seed."""
        while True:
            if evaluation:
                done, _ = self._play([eval_index], True)
            else:
                done, _ = self._play([self._next_training_index()], False)
            if done:
                return done[0]

    def run_round(self) -> list[EpisodeData]:
        """One training episode on every worker at once (see the module docstring); episodes
        an env aborts (``EpisodeAbortedError``) are dropped and played again next round, with
        their seeds; their env steps still count (they happened)."""
        done, _ = self._play([self._next_training_index() for _ in self.envs], False)
        return done

    def _next_training_index(self) -> int:
        if self._retry:
            return self._retry.pop(0)
        self.episode_index += 1
        return self.episode_index - 1

    def _play(self, indices: list[int], evaluation: bool
              ) -> tuple[list[EpisodeData], list[int]]:
        """Episodes ``indices`` on workers 0..len-1 at once -> (finished, aborted indices)."""
        staged = len(self.envs) > 1
        playing: list[_Playing] = []
        aborted: list[int] = []
        for w, j in enumerate(indices):
            seed = self._episode_seed(evaluation, j)
            try:
                obs, info = self.envs[w].reset(seed=seed, options={
                    'evaluation': evaluation, 'eval_index': j if evaluation else 0})
            except EpisodeAbortedError:
                self._aborted(j, evaluation, aborted)
                continue
            run = _Playing(w, j, seed, deque([obs], maxlen=self.replay.frame_stack),
                           info.get('stamp_ns'), [info.get('stamp_ns')], time.perf_counter())
            if not evaluation:
                if staged:
                    run.first_obs = obs
                else:
                    self.replay.add_first(obs)
            playing.append(run)
        finished: list[EpisodeData] = []
        stop = self.callbacks.should_stop
        while playing:
            obs_batch = np.stack([self.replay.stacked_obs(list(r.frames)) for r in playing])
            actions = self.agent.act_batch(obs_batch, self.env_step, eval_mode=evaluation)
            for r, action in zip(playing, actions):
                if self._split[r.worker]:
                    self.envs[r.worker].step_async(action)
            if self._due:  # the last step's updates, while the drivers step
                self._run_updates()
            still: list[_Playing] = []
            for r, action in zip(playing, actions):
                env = self.envs[r.worker]
                try:
                    obs, _, terminated, truncated, info = (
                        env.step_wait() if self._split[r.worker] else env.step(action))
                except EpisodeAbortedError:
                    if not evaluation and staged:
                        self._flush(r)   # its complete n-step windows are real transitions
                    self._aborted(r.index, evaluation, aborted)
                    continue
                if 'features' not in info:
                    raise KeyError("env info lacks 'features' (packed reward-input features of "
                                   'the step, FEATURE_DIM floats): the trainer computes rewards '
                                   'from them')
                r.frames.append(obs)
                r.stamps.append(info.get('stamp_ns'))
                r.feats.append(np.asarray(info['features'], dtype=np.float32))
                r.actions.append(action)
                r.flags.append(bool(info.get('success', False)))
                if not evaluation:
                    if staged:
                        r.staged.append((action, r.feats[-1], obs, terminated, truncated))
                    else:
                        self.replay.add(action, r.feats[-1], obs, terminated, truncated)
                    self.env_step += 1
                    self._due += self._updates_due()
                    if not self._overlap:
                        self._run_updates()
                if terminated or truncated or (stop is not None and stop()):
                    if not evaluation and staged:
                        self._flush(r)
                    finished.append(self._episode_data(r, evaluation, terminated, info))
                else:
                    still.append(r)
            playing = still
        if self._due:
            self._run_updates()
        return finished, aborted

    def _aborted(self, index: int, evaluation: bool, aborted: list[int]) -> None:
        self.aborted_episodes += 1
        aborted.append(index)
        if not evaluation:
            self._retry.append(index)

    def _flush(self, r: _Playing) -> None:
        """A worker's staged transitions into the replay (N > 1)."""
        if r.first_obs is None:
            return
        self.replay.add_first(r.first_obs)
        for action, feats, obs, terminated, truncated in r.staged:
            self.replay.add(action, feats, obs, terminated, truncated)
        r.first_obs, r.staged = None, []

    def _episode_data(self, r: _Playing, evaluation: bool, terminated: bool,
                      info: dict[str, Any]) -> EpisodeData:
        features = np.stack(r.feats)
        rewards = np.asarray(self.reward_fn(features), dtype=np.float32)
        data = EpisodeData(
            task=self.task, features=features, actions=np.stack(r.actions).astype(np.float32),
            rewards=rewards, success_flags=np.asarray(r.flags, dtype=bool),
            success=self._success(info, features),
            block_rest_z=float(info.get('block_rest_z', math.nan)), seed=r.seed,
            episode_index=r.index if not evaluation else self.episode_index,
            env_step=self.env_step, reward_version=self.reward_version, evaluation=evaluation,
            worker=self.worker_names[r.worker],
            extra={'return': float(rewards.sum()), 'wall_s': time.perf_counter() - r.start,
                   'terminated': bool(terminated)})
        if r.start_stamp_ns is not None and 'stamp_ns' in info:  # a driver's clock (ROS route)
            data.extra.update(start_stamp_ns=int(r.start_stamp_ns),
                              end_stamp_ns=int(info['stamp_ns']),
                              stamps_ns=[int(s) for s in r.stamps if s is not None])
        if self.callbacks.on_episode_end is not None:
            self.callbacks.on_episode_end(data)
        return data

    def _success(self, info: dict[str, Any], features: np.ndarray) -> bool:
        if 'is_success' in info:
            return bool(info['is_success'])
        if self.task in TASKS:
            return bool(episode_success(self.task, unpack(features)))
        return False

    def _updates_due(self) -> int:
        """Gradient updates the env step just counted makes due (0 or updates_per_step)."""
        a = self.cfg.agent
        if self.env_step < a.num_expl_steps or self.env_step % a.update_every_steps:
            return 0
        return a.updates_per_step if len(self.replay) >= a.batch_size else 0

    def _run_updates(self) -> None:
        """Run the due updates (each samples the replay as it is now)."""
        due, self._due = self._due, 0
        for _ in range(due):
            want = (self.update_count % self.cfg.trainer.metrics_every_updates) == 0
            metrics = self.agent.update(self.replay.sample(), self.env_step, with_metrics=want)
            self.update_count += 1
            if want:
                self.last_metrics = metrics
                if self.callbacks.on_update is not None:
                    self.callbacks.on_update(self.env_step, metrics)

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        """Deterministic-policy episodes; returns success rate, mean return, env step."""
        n = self.cfg.trainer.eval_episodes if episodes is None else episodes
        results: list[EpisodeData] = []
        pending = list(range(n))
        while pending:  # rounds of one episode per worker; aborted ones are played again
            batch, pending = pending[:len(self.envs)], pending[len(self.envs):]
            done, aborted = self._play(batch, True)
            results += done
            pending = aborted + pending
        self.eval_round += 1
        out = {'env_step': float(self.env_step),
               'success_rate': float(np.mean([r.success for r in results])) if n else math.nan,
               'mean_return': float(np.mean([r.extra['return'] for r in results]))
               if n else math.nan,
               'episodes': float(n)}
        self.eval_history.append(out)
        if self.callbacks.on_eval is not None:
            self.callbacks.on_eval(out)
        return out

    # ------------------------------------------------------------------ the loop
    def train(self, total_env_steps: int | None = None) -> list[dict[str, float]]:
        """Run training episodes until ``total_env_steps`` (whole episodes); returns evals."""
        target = self.cfg.trainer.total_env_steps if total_env_steps is None else total_env_steps
        bar = None
        if self.cfg.trainer.progress:
            from tqdm import tqdm
            bar = tqdm(total=target, initial=min(self.env_step, target), unit='step',
                       desc=f'drqv2 {self.task}'.strip(), dynamic_ncols=True)
        stop = self.callbacks.should_stop
        try:
            while self.env_step < target:
                before = self.env_step
                eps = self.run_round()
                if bar is not None:
                    bar.update(min(self.env_step, target) - min(before, target))
                    if eps:
                        bar.set_postfix(ret=f'{np.mean([e.extra["return"] for e in eps]):.1f}',
                                        ok=sum(e.success for e in eps))
                if stop is not None and stop():
                    break
                if self.env_step >= self.next_eval:
                    res = self.evaluate()
                    self.next_eval += self.cfg.trainer.eval_every_steps
                    if bar is not None:
                        bar.write(f'eval @ {self.env_step}: success {res["success_rate"]:.2f} '
                                  f'return {res["mean_return"]:.1f}')
                if self.env_step >= self.next_checkpoint and self.cfg.trainer.run_dir:
                    self.save(Path(self.cfg.trainer.run_dir) / CHECKPOINT_NAME)
                    self.next_checkpoint += self.cfg.trainer.checkpoint_every_steps
        finally:
            if bar is not None:
                bar.close()
        return self.eval_history

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {'agent': self.agent.state_dict(), 'replay': self.replay.state_dict(),
                'counters': {'env_step': self.env_step, 'episode_index': self.episode_index,
                             'update_count': self.update_count, 'eval_round': self.eval_round,
                             'next_eval': self.next_eval,
                             'next_checkpoint': self.next_checkpoint,
                             'reward_version': self.reward_version,
                             'retry': list(self._retry)},
                'eval_history': list(self.eval_history), 'config': self.cfg.to_dict()}

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic checkpoint (call between episodes)."""
        return save_checkpoint(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Resume from ``save``'s file: same agent, optimisers, replay, counters and RNGs."""
        state = load_checkpoint(path, map_location=self.agent.device)
        self.agent.load_state_dict(state['agent'])
        self.replay.load_state_dict(state['replay'])
        c = state['counters']
        self.env_step = int(c['env_step'])
        self.episode_index = int(c['episode_index'])
        self.update_count = int(c['update_count'])
        self.eval_round = int(c['eval_round'])
        self.next_eval = c['next_eval']
        self.next_checkpoint = c['next_checkpoint']
        self.reward_version = int(c['reward_version'])
        self._retry = [int(j) for j in c.get('retry', [])]
        self.eval_history = list(state['eval_history'])

