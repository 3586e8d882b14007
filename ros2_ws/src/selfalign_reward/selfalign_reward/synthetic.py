"""Synthetic episodes with controllable behaviour, for tests, benchmarks and offline demos.

``synthetic_episode`` writes the raw quantities of a scripted gripper motion (approach the block,
optionally touch it with a given force, push it toward the goal, lift it) and turns them into
features with ``features.compute_features`` — the same path real episodes take — so reward
templates, the ranking likelihood and Metropolis–Hastings can be exercised without a simulator.
Pure numpy; deterministic given the arguments and ``rng``.
"""

from __future__ import annotations

import numpy as np

from selfalign_core import features as F
from selfalign_core import tasks
from selfalign_core.episode import EpisodeRecord

REST_Z = F.BLOCK_SIZE_M / 2  # block centre height at rest on a table at z = 0, m
CONTROL_PERIOD_S = 0.1       # 10 Hz control (docs/method.md "Task set-up")


def synthetic_episode(task: str = 'touch', steps: int = 100, *, reach_step: int = 30,
                      closest_m: float = 0.0, force_n: float = 0.0, push_fraction: float = 0.0,
                      lift_m: float = 0.0, goal_distance_m: float = 0.2,
                      rng: np.random.Generator | None = None, episode_index: int = 0,
                      env_step: int = 0) -> EpisodeRecord:
    """One scripted episode of ``steps`` control steps.

    Args:
        task: task name; decides the success flags only.
        reach_step: step at which the fingers arrive at their closest approach.
        closest_m: closest finger-to-block surface gap, m (0 = touching).
        force_n: contact force while touching (closest_m == 0), N, both fingers when lifting.
        push_fraction: fraction of the block-to-goal distance the block travels after contact.
        lift_m: height the block is raised after contact, m.
        goal_distance_m: initial block-to-goal distance (along +x), m.
        rng: adds 1 mm position noise when given.
    """
    t = np.arange(steps)
    block0 = np.array([0.5, 0.0, REST_Z])
    goal = block0 + np.array([goal_distance_m, 0.0, 0.0])
    # After contact the block moves linearly toward the goal / up until the end of the episode.
    after = np.clip((t - reach_step) / max(steps - 1 - reach_step, 1), 0.0, 1.0)
    block = np.tile(block0, (steps, 1))
    block[:, 0] += push_fraction * goal_distance_m * after
    block[:, 2] += lift_m * after
    # Fingers (closed, width 0) sit behind the block (-x side) at the gap, at block centre height;
    # before reach_step they come in from 30 cm further back along a straight line.
    gap = np.where(t >= reach_step, closest_m, closest_m + 0.3 * (1 - t / max(reach_step, 1)))
    ee = block.copy()
    ee[:, 0] -= F.BLOCK_SIZE_M / 2 + gap
    if rng is not None:
        ee += rng.normal(0.0, 0.001, ee.shape)
    touching = (t >= reach_step) & (closest_m <= 1e-6)
    force = np.where(touching, force_n, 0.0)
    vel = np.vstack([np.zeros((1, 3)), np.diff(ee, axis=0) / CONTROL_PERIOD_S])
    bvel = np.vstack([np.zeros((1, 3)), np.diff(block, axis=0) / CONTROL_PERIOD_S])
    action = np.zeros((steps, 4))
    action[:, :3] = np.clip(vel * CONTROL_PERIOD_S / 0.02, -1, 1)
    action[:, 3] = np.where(lift_m > 0, 1.0, -1.0)
    raw = {
        'ee_pos': ee, 'ee_quat': np.tile([1.0, 0.0, 0.0, 0.0], (steps, 1)), 'ee_vel': vel,
        'finger_width': np.zeros(steps), 'force_left': force,
        'force_right': force if lift_m > 0 else np.zeros(steps),
        'block_pos': block, 'block_quat': np.tile([0.0, 0.0, 0.0, 1.0], (steps, 1)),
        'block_vel': bvel, 'block_start_pos': np.tile(block0, (steps, 1)),
        'goal_pos': np.tile(goal, (steps, 1)), 'action': action,
    }
    feats = F.compute_features(raw, REST_Z)
    flags = tasks.step_condition(task, feats)
    success = bool(tasks.episode_success(task, feats))
    return EpisodeRecord(task=task, features=F.pack(feats), actions=action.astype(np.float32),
                         success_flags=flags, success=success, block_rest_z=REST_Z,
                         episode_index=episode_index, env_step=env_step)


def random_episodes(task: str, n: int, rng: np.random.Generator, steps: int = 100
                    ) -> list[EpisodeRecord]:
    """``n`` episodes of varied behaviour for ``task`` (approach speed, gap, force, push, lift)."""
    out = []
    for i in range(n):
        closest = float(rng.choice([0.0, 0.0, rng.uniform(0.002, 0.1)]))
        force = float(rng.uniform(0.02, 2.0)) if closest == 0.0 else 0.0
        push = float(rng.uniform(0.0, 1.0)) if task == 'push' and closest == 0.0 else 0.0
        lift = float(rng.uniform(0.0, 0.1)) if task == 'grasp_lift' and closest == 0.0 else 0.0
        out.append(synthetic_episode(task, steps, reach_step=int(rng.integers(5, steps // 2)),
                                     closest_m=closest, force_n=force, push_fraction=push,
                                     lift_m=lift, rng=rng, episode_index=i))
    return out
