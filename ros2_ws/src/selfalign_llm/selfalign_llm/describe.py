"""Trajectory -> short factual text that the LLM ranks and analyses (the same for every backend).

The description states measured facts only, deterministically (fixed rounding, fixed order):
closest finger-to-block approach and when, contact (max force, steps in contact, longest
contact run, both fingers), lift height, block displacement, distance to the goal at the
start / middle / end, gripper usage, and success. It never states a reward or a progress score,
so the LLM judges the behaviour, not our numbers. Pure numpy: no rclpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from selfalign_core import tasks
from selfalign_core.features import unpack

#: Finger width below which the gripper counts as closed, m (open is 0.08 m).
CLOSED_WIDTH_M = 0.01


def episode_features(episode: Any) -> dict[str, np.ndarray]:
    """Feature dict (T, ...) of an EpisodeRecord (``.feature_dict()``), a packed (T, D) array,
    or a feature dict; ValueError on anything else."""
    if hasattr(episode, 'feature_dict'):
        return episode.feature_dict()
    if isinstance(episode, np.ndarray):
        if episode.ndim != 2:
            raise ValueError(f'packed episode features must be (T, D), got {episode.shape}')
        return unpack(episode)
    if isinstance(episode, Mapping):
        return {k: np.asarray(v) for k, v in episode.items()}
    raise ValueError(f'cannot describe {type(episode).__name__}: pass an EpisodeRecord, '
                     'a packed (T, FEATURE_DIM) array or a feature dict')


def _cm(x: float) -> str:
    return f'{100.0 * float(x):.1f} cm'


def _longest_run(flags: np.ndarray) -> int:
    return int(tasks.longest_run(np.asarray(flags, dtype=bool)[None])[0])


def describe_episode(episode: Any, task: str | None = None, success: bool | None = None) -> str:
    """Facts of one episode as a few lines of text.

    ``episode``: EpisodeRecord, packed (T, FEATURE_DIM) features, or feature dict with leading
    axis T. ``task`` defaults to ``episode.task``; ``success`` to ``episode.success`` or, failing
    that, the success definition (docs/method.md "Task success") on the features.
    """
    f = episode_features(episode)
    task = task or getattr(episode, 'task', None)
    if task is None:
        raise ValueError('describe_episode needs the task name (episode has no .task)')
    tasks.get_task(task)
    if success is None:
        success = getattr(episode, 'success', None)
    if success is None:
        success = bool(tasks.episode_success(task, f))
    dist = np.asarray(f['ee_block_dist'], dtype=np.float64)
    steps = len(dist)
    if steps == 0:
        raise ValueError('episode has no steps')
    force = np.asarray(f['contact_force'], dtype=np.float64)
    both = np.asarray(f['both_fingers_contact_force'], dtype=np.float64)
    lift = np.asarray(f['block_lift'], dtype=np.float64)
    disp = np.asarray(f['block_displacement'], dtype=np.float64)
    goal = np.asarray(f['block_goal_dist'], dtype=np.float64)
    width = np.asarray(f['finger_width'], dtype=np.float64)
    gripper_cmd = np.asarray(f['action'], dtype=np.float64)[:, 3]

    closest = int(np.argmin(dist))
    touching = force > tasks.TOUCH_FORCE_N
    both_touch = both > tasks.TOUCH_FORCE_N
    lines = [f'- steps: {steps}',
             f'- closest finger-to-block distance: {_cm(dist[closest])} at step {closest}; '
             f'start {_cm(dist[0])}, end {_cm(dist[-1])}']
    if touching.any():
        first = int(np.argmax(touching))
        lines.append(f'- contact: max force {force.max():.2f} N; in contact {int(touching.sum())} '
                     f'of {steps} steps (first at step {first}, longest run '
                     f'{_longest_run(touching)} steps); both fingers in contact '
                     f'{int(both_touch.sum())} steps')
    else:
        lines.append(f'- contact: none (max force {force.max():.2f} N, touch means > '
                     f'{tasks.TOUCH_FORCE_N:g} N)')
    lines.append(f'- block lift: max {_cm(lift.max())} above rest, end {_cm(lift[-1])}')
    lines.append(f'- block moved: end {_cm(disp[-1])} from its start (max {_cm(disp.max())})')
    lines.append(f'- block-to-goal distance: start {_cm(goal[0])}, middle '
                 f'{_cm(goal[steps // 2])}, end {_cm(goal[-1])}')
    closed = width < CLOSED_WIDTH_M
    lines.append(f'- gripper: commanded closed {int((gripper_cmd > 0).sum())} of {steps} steps; '
                 f'finger width {_cm(width.min())} to {_cm(width.max())}, nearly closed '
                 f'{int(closed.sum())} steps')
    lines.append(f"- task success: {'yes' if success else 'no'}")
    return '\n'.join(lines)
