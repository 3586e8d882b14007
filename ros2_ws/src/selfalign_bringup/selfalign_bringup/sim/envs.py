"""Gymnasium environments over ``PandaWorld``: the three tasks with state or pixel observations.

Registered on import of ``selfalign_bringup.sim``:

=============================  ==========  =======================================
id                             task        observation
=============================  ==========  =======================================
SelfAlign/Touch-v0             touch       state, float32 (features.OBS_DIM,)
SelfAlign/GraspLift-v0         grasp_lift  state
SelfAlign/Push-v0              push        state
SelfAlign/TouchPixels-v0       touch       pixels, uint8 (3, 84, 84), one frame
SelfAlign/GraspLiftPixels-v0   grasp_lift  pixels
SelfAlign/PushPixels-v0        push        pixels
=============================  ==========  =======================================

Action: float32 (4,) in [-1, 1] -> ``contract.action_to_command`` (EE velocity, binary gripper).
Pixel observations are single frames: frame stacking (3 in DrQ-v2) is the agent's job.
Reward: ``tasks.oracle_reward`` unless a ``reward_fn(features_dict) -> (B,)`` (or a
``(total, terms)`` tuple, as ``selfalign_reward.evaluate.RewardFunction`` returns) is given.
An episode lasts ``get_task(task).episode_steps`` control steps, then ``truncated=True``;
``terminated`` only with ``terminate_on_success=True`` once the per-step success condition held
``tasks.HOLD_STEPS`` consecutive steps.

info every step: 'features' packed (FEATURE_DIM,) float32 of this step (after the action),
'action' (4,) float32, 'success' (per-step condition, bool), 'block_rest_z'. At the episode end
also 'is_success' (``tasks.episode_success`` over the episode) and 'episode_features'
(T, FEATURE_DIM) — the post-action features of every step, the form Episode records hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium import spaces
import numpy as np

from selfalign_bringup.sim.config import SimConfig
from selfalign_bringup.sim.world import PandaWorld, StepResult
from selfalign_core import features, tasks
from selfalign_core.contract import ACTION_DIM, action_to_command, ActionScale

RewardFn = Callable[[dict[str, np.ndarray]], Any]
OBS_MODES = ('state', 'pixels')


class SelfAlignEnv(gym.Env):
    """One task in the PyBullet Panda scene (see the module docstring for spaces and info)."""

    metadata = {'render_modes': ['rgb_array'], 'render_fps': 10}

    def __init__(self, task: str = 'touch', obs: str = 'state',
                 reward_fn: RewardFn | None = None, terminate_on_success: bool = False,
                 sim_config: SimConfig | dict | None = None, image_size_px: int | None = None,
                 action_scale: ActionScale | None = None,
                 render_mode: str | None = None) -> None:
        self.task = tasks.get_task(task)
        if obs not in OBS_MODES:
            raise ValueError(f'obs={obs!r}: choose one of {OBS_MODES}')
        if render_mode not in (None, 'rgb_array'):
            raise ValueError(f"render_mode={render_mode!r}: only 'rgb_array' (or None)")
        if isinstance(sim_config, dict):
            sim_config = SimConfig.from_dict(sim_config)
        self.cfg = sim_config if sim_config is not None else SimConfig()
        self.obs_mode = obs
        self.image_size_px = int(image_size_px or self.cfg.image_size_px)
        self.reward_fn = reward_fn
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self.action_scale = action_scale or ActionScale(control_period_s=self.cfg.control_period_s)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)
        if obs == 'state':
            self.observation_space = spaces.Box(-np.inf, np.inf, (features.OBS_DIM,),
                                                dtype=np.float32)
        else:
            s = self.image_size_px
            self.observation_space = spaces.Box(0, 255, (3, s, s), dtype=np.uint8)
        self.world = PandaWorld(self.cfg)
        self._last: StepResult | None = None
        self._rows: list[np.ndarray] = []
        self._t = 0
        self._run = 0

    # ------------------------------------------------------------------ helpers
    def _features(self, res: StepResult, action: np.ndarray) -> dict[str, np.ndarray]:
        raw = dict(res.raw, action=action)
        return features.compute_features(raw, res.block_rest_z)

    def _obs(self, f: dict[str, np.ndarray]) -> np.ndarray:
        if self.obs_mode == 'state':
            return features.observation_vector(f)[0]
        return np.ascontiguousarray(self.world.render_rgb(self.image_size_px).transpose(2, 0, 1))

    def _reward(self, f: dict[str, np.ndarray]) -> float:
        if self.reward_fn is None:
            r = tasks.oracle_reward(self.task.name, f)
        else:
            r = self.reward_fn(f)
            if isinstance(r, tuple):  # RewardFunction-style (total, terms)
                r = r[0]
        r = np.asarray(r, dtype=np.float64).reshape(-1)
        if r.shape != (1,) or not np.isfinite(r[0]):
            raise ValueError(f'reward_fn must return one finite value per batch row (B=1), '
                             f'got {r!r}')
        return float(r[0])

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        """New episode; the world seed is ``seed`` or drawn from the env's np_random."""
        super().reset(seed=seed)
        world_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        self._last = self.world.reset(world_seed)
        self._rows, self._t, self._run = [], 0, 0
        action = np.zeros(ACTION_DIM, dtype=np.float32)
        f = self._features(self._last, action)
        packed = features.pack(f)[0]
        info = {'features': packed, 'action': action, 'success': False,
                'block_rest_z': self._last.block_rest_z, 'world_seed': world_seed}
        return self._obs(f), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._last is None:
            raise RuntimeError('step() before reset(); call env.reset(seed=...) first')
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f'action must have shape ({ACTION_DIM},), got {a.shape}')
        a = np.clip(a, -1.0, 1.0)
        velocity, width = action_to_command(a, self.action_scale)
        self._last = self.world.step(velocity, width)
        f = self._features(self._last, a)
        packed = features.pack(f)[0]
        self._rows.append(packed)
        self._t += 1
        success = bool(tasks.step_condition(self.task.name, f)[0])
        self._run = self._run + 1 if success else 0
        reward = self._reward(f)
        terminated = self.terminate_on_success and self._run >= tasks.HOLD_STEPS
        truncated = (not terminated) and self._t >= self.task.episode_steps
        info = {'features': packed, 'action': a, 'success': success,
                'block_rest_z': self._last.block_rest_z}
        if terminated or truncated:
            ep = np.stack(self._rows)
            info['episode_features'] = ep
            info['is_success'] = bool(tasks.episode_success(self.task.name,
                                                            features.unpack(ep)))
        return self._obs(f), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """rgb_array: uint8 (H, W, 3) from the scene camera; None without a render_mode."""
        if self.render_mode == 'rgb_array':
            return self.world.render_rgb(self.image_size_px)
        return None

    def close(self) -> None:
        self.world.close()
        super().close()


#: Registered ids -> (task, observation mode).
ENV_IDS: dict[str, tuple[str, str]] = {
    'SelfAlign/Touch-v0': ('touch', 'state'),
    'SelfAlign/GraspLift-v0': ('grasp_lift', 'state'),
    'SelfAlign/Push-v0': ('push', 'state'),
    'SelfAlign/TouchPixels-v0': ('touch', 'pixels'),
    'SelfAlign/GraspLiftPixels-v0': ('grasp_lift', 'pixels'),
    'SelfAlign/PushPixels-v0': ('push', 'pixels'),
}


def register_envs() -> None:
    """Register ``ENV_IDS`` with gymnasium (idempotent)."""
    for env_id, (task, obs) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point='selfalign_bringup.sim.envs:SelfAlignEnv',
                         kwargs={'task': task, 'obs': obs})
