"""Task words, success (docs/method.md "Task success") and ground-truth progress over features.

Pure numpy. ``selfalign_bringup.sim`` builds the scenes; everything that *judges* an episode lives
here so that the simulator, the policy's evaluation, the scripted teacher and the LLM's trajectory
descriptions agree. ``oracle_reward`` is a hand-written dense reward used only as a baseline and
for learning checks — it is never shown to the method.

Features are dicts of arrays from ``selfalign_core.features`` with leading axes ``(..., T)``
for an
episode of T steps (scalars ``(T,)``, vectors ``(T, 3)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOUCH_FORCE_N = 0.1         # a finger touches above this force, N (docs/method.md "Task success")
LIFT_HEIGHT_M = 0.05        # grasp_lift: block raised at least this above rest
GOAL_RADIUS_M = 0.05        # push: block centre within this of the goal at episode end
PUSH_LIFT_TOLERANCE_M = 0.02  # push: "never lifting it" = block_lift stays below this
HOLD_STEPS = 3              # consecutive steps the touch / lift condition must hold
GRASP_FORCE_N = 0.1         # grasp_lift: each finger presses with at least this


@dataclass(frozen=True)
class Task:
    """A task: name, the words given to the LLM, episode length in control steps."""

    name: str
    description: str
    episode_steps: int = 100


TASKS: dict[str, Task] = {
    'touch': Task('touch', 'Touch the block on the table with the gripper fingers.'),
    'grasp_lift': Task('grasp_lift', 'Grasp the block with both fingers and lift it at least '
                       '5 cm above the table.'),
    'push': Task('push', 'Push the block along the table to the green goal marker without '
                 'lifting it.'),
}


def get_task(name: str) -> Task:
    """Return the task called ``name``; a ValueError lists the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f'unknown task {name!r}; choose one of {sorted(TASKS)}') from None


def step_condition(task: str, f: dict[str, np.ndarray]) -> np.ndarray:
    """Per-step success condition, bool array over the leading axes of ``f``."""
    get_task(task)
    if task == 'touch':
        return f['contact_force'] > TOUCH_FORCE_N
    if task == 'grasp_lift':
        return ((f['both_fingers_contact_force'] > GRASP_FORCE_N)
                & (f['block_lift'] >= LIFT_HEIGHT_M))
    return (f['block_goal_dist'] < GOAL_RADIUS_M) & (f['block_lift'] < PUSH_LIFT_TOLERANCE_M)


def longest_run(flags: np.ndarray) -> np.ndarray:
    """Longest run of consecutive True along the last axis, shape flags.shape[:-1]."""
    flags = np.asarray(flags, dtype=bool)
    run = np.zeros(flags.shape[:-1], dtype=np.int64)
    best = np.zeros_like(run)
    for t in range(flags.shape[-1]):
        run = np.where(flags[..., t], run + 1, 0)
        best = np.maximum(best, run)
    return best


def episode_success(task: str, f: dict[str, np.ndarray]) -> np.ndarray:
    """Episode success (docs/method.md "Task success") from features (..., T); bool (...)."""
    cond = step_condition(task, f)
    if task == 'push':
        never_lifted = np.max(f['block_lift'], axis=-1) < PUSH_LIFT_TOLERANCE_M
        return (f['block_goal_dist'][..., -1] < GOAL_RADIUS_M) & never_lifted
    return longest_run(cond) >= HOLD_STEPS


def progress(task: str, f: dict[str, np.ndarray]) -> np.ndarray:
    """Ground-truth progress of episodes (..., T) -> (...): higher is better, stage by stage.

    The scripted teacher ranks by this. Stages: approach (closest finger-to-block distance),
    contact, then the task's own goal (lift height / goal distance), then success.
    """
    reach = 1.0 - np.clip(np.min(f['ee_block_dist'], axis=-1) / 0.3, 0.0, 1.0)
    touched = (np.max(f['contact_force'], axis=-1) > TOUCH_FORCE_N).astype(np.float64)
    success = episode_success(task, f).astype(np.float64)
    if task == 'touch':
        held = np.clip(longest_run(step_condition(task, f)) / HOLD_STEPS, 0.0, 1.0)
        return reach + touched + held + success
    if task == 'grasp_lift':
        both = (np.max(f['both_fingers_contact_force'], axis=-1) > GRASP_FORCE_N).astype(float)
        lift = np.clip(np.max(f['block_lift'], axis=-1) / LIFT_HEIGHT_M, 0.0, 1.0)
        return reach + touched + both + 2.0 * lift + success
    start = f['block_goal_dist'][..., 0]
    final = f['block_goal_dist'][..., -1]
    toward = np.clip((start - final) / np.maximum(start, 1e-6), -1.0, 1.0)
    lifted = (np.max(f['block_lift'], axis=-1) >= PUSH_LIFT_TOLERANCE_M).astype(np.float64)
    return reach + touched + 3.0 * toward + 2.0 * success - lifted


def oracle_reward(task: str, f: dict[str, np.ndarray]) -> np.ndarray:
    """Hand-written dense per-step reward (baseline only), float32 over the leading axes of f."""
    get_task(task)
    if task in ('touch', 'grasp_lift'):
        reach = 1.0 - np.tanh(10.0 * f['ee_block_dist'])
    if task == 'touch':
        r = reach + 2.0 * (f['contact_force'] > TOUCH_FORCE_N)
    elif task == 'grasp_lift':
        grip = (f['both_fingers_contact_force'] > GRASP_FORCE_N).astype(np.float32)
        lift = np.clip(f['block_lift'] / LIFT_HEIGHT_M, 0.0, 1.0)
        r = reach + grip + 4.0 * grip * lift + 2.0 * step_condition(task, f)
    else:
        # Reach the push point (behind the block, opposite the goal), not the nearest face: a
        # reach-the-block term pays as much for touching the block's goal side, which pushes it
        # the wrong way (0 % success at 60k env steps with that term; docs/tasks.md).
        behind = 1.0 - np.tanh(10.0 * f['ee_push_point_dist'])
        push = 1.0 - np.tanh(10.0 * f['block_goal_dist'])
        lifted = f['block_lift'] >= PUSH_LIFT_TOLERANCE_M
        r = behind + 3.0 * push + 2.0 * step_condition(task, f) - 1.0 * lifted
    return np.asarray(r, dtype=np.float32)
