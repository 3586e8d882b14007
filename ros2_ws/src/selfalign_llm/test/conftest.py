"""Fixtures for selfalign_llm tests: hand-built episodes (RAW -> compute_features -> pack)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from selfalign_core import features as F
from selfalign_core import tasks
from selfalign_core.episode import EpisodeRecord

REST_Z = 0.025
BLOCK = np.array([0.5, 0.0, REST_Z])
GOAL = np.array([0.6, 0.1, REST_Z])


def build_episode(task: str, approach: float = 1.0, force: float = 0.0, both: bool = False,
                  lift: float = 0.0, push: float = 0.0, close: bool = False, steps: int = 30,
                  episode_index: int = 0) -> EpisodeRecord:
    """An episode where the fingertips descend ``approach`` of the way from 30 cm above the block
    (1.0 = down to the block top), press with ``force`` N (one finger, or ``both``) over the
    second half, lift the block by ``lift`` m and push it ``push`` of the way to the goal."""
    t = np.linspace(0.0, 1.0, steps)
    late = np.clip(2 * t - 1, 0, 1)  # 0 in the first half, ramps to 1 over the second
    block = BLOCK + (GOAL - BLOCK) * push * late[:, None]
    block[:, 2] += lift * late
    top = BLOCK + np.array([0.0, 0.0, 0.025])
    ee = top + np.array([0.0, 0.0, 0.3]) * (1 - approach * np.minimum(2 * t, 1))[:, None]
    ee = ee + (block - BLOCK)
    fl = force * late
    raw = {
        'ee_pos': ee, 'ee_quat': np.tile([1.0, 0.0, 0.0, 0.0], (steps, 1)),
        'ee_vel': np.gradient(ee, axis=0) / 0.1,
        'finger_width': np.where(close & (late > 0), 0.05, 0.08),
        'force_left': fl, 'force_right': fl if both else np.zeros(steps),
        'block_pos': block, 'block_quat': np.tile([0.0, 0.0, 0.0, 1.0], (steps, 1)),
        'block_vel': np.gradient(block, axis=0) / 0.1,
        'block_start_pos': np.tile(BLOCK, (steps, 1)), 'goal_pos': np.tile(GOAL, (steps, 1)),
        'action': np.column_stack([np.zeros((steps, 3)), np.where(close & (late > 0), 1., -1.)]),
    }
    f = F.compute_features(raw, REST_Z)
    return EpisodeRecord(task=task, features=F.pack(f), success=bool(tasks.episode_success(
        task, f)), success_flags=tasks.step_condition(task, f), block_rest_z=REST_Z,
        episode_index=episode_index)


@pytest.fixture
def make_episode() -> Callable[..., EpisodeRecord]:
    """``build_episode`` (see its docstring)."""
    return build_episode


@pytest.fixture
def touch_episodes() -> list[EpisodeRecord]:
    """Four touch episodes with distinct ground-truth progress (index 3 best, 0 worst)."""
    return [build_episode('touch', approach=0.2, episode_index=0),
            build_episode('touch', approach=0.7, episode_index=1),
            build_episode('touch', approach=0.95, episode_index=2),
            build_episode('touch', approach=1.0, force=0.6, episode_index=3)]
