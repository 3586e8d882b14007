"""Benchmark of the PyBullet gym envs: in-process steps/s and scripted-controller success rates.

Run after ``source scripts/env.sh``:
``python benchmarks/env_speed.py [--steps N] [--episodes N]``. Prints two markdown tables: env
steps/s (random actions, resets included) for state and pixel observations of each task, and the
success rate of the ground-truth scripted controllers (sim/scripted.py); the push row says
whether pushing is physically learnable in the scene as configured.

``measure_inprocess`` is importable (the ROS bridge benchmark divides its lockstep rate by it).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from selfalign_bringup.sim.envs import SelfAlignEnv
from selfalign_bringup.sim.scripted import CONTROLLERS
from selfalign_core import features

TASKS = ('touch', 'grasp_lift', 'push')


def measure_inprocess(task: str, obs: str, steps: int, seed: int = 0) -> float:
    """Env steps per (wall-clock) second of ``SelfAlignEnv(task, obs)`` under uniform random
    actions. Resets (every ``episode_steps``) are included in the time; env construction is not.
    """
    return measure(task, obs, steps, seed)[0]


def measure(task: str, obs: str, steps: int, seed: int = 0) -> tuple[float, float]:
    """(steps per wall-clock second, steps per CPU-second of this process), as
    ``measure_inprocess``. The CPU figure is robust to other processes sharing the cores."""
    env = SelfAlignEnv(task, obs=obs)
    try:
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(steps):
            _, _, term, trunc, _ = env.step(actions[k])
            if term or trunc:
                env.reset()
        return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)
    finally:
        env.close()


def scripted_success(task: str, episodes: int, seed: int = 0) -> dict[str, float]:
    """Success rate of the scripted controller over ``episodes`` seeds (seed, seed+1, ...).

    Also returns the mean final block-goal distance (m) and max block lift (m).
    """
    env = SelfAlignEnv(task, obs='state')
    wins, final_dist, lift = [], [], []
    try:
        for ep in range(episodes):
            _, info = env.reset(seed=seed + ep)
            done = False
            while not done:
                f = features.unpack(info['features'][None])
                _, _, term, trunc, info = env.step(CONTROLLERS[task](f).astype(np.float32))
                done = term or trunc
            wins.append(info['is_success'])
            ef = features.unpack(info['episode_features'])
            final_dist.append(float(ef['block_goal_dist'][-1]))
            lift.append(float(ef['block_lift'].max()))
    finally:
        env.close()
    return {'success': float(np.mean(wins)), 'final_goal_dist_m': float(np.mean(final_dist)),
            'max_lift_m': float(np.mean(lift))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=500, help='env steps per speed measurement')
    ap.add_argument('--episodes', type=int, default=30, help='episodes per scripted task')
    args = ap.parse_args()
    print(f'## In-process env speed (random actions, resets included, {args.steps} steps, '
          f'{os.cpu_count()} CPUs)\n')
    load = os.getloadavg()[0]
    print(f"Load average at start: {load:.1f}. steps/CPU-s counts only this process's CPU "
          'time, so it is what one free core would give.\n')
    print('| task | obs | steps/s (wall) | ms/step (wall) | steps/CPU-s |')
    print('|---|---|---:|---:|---:|')
    for task in TASKS:
        for obs in ('state', 'pixels'):
            sps, cps = measure(task, obs, args.steps)
            print(f'| {task} | {obs} | {sps:.0f} | {1000 / sps:.2f} | {cps:.0f} |', flush=True)
    print(f'\n## Scripted controllers ({args.episodes} episodes each, seeds 0..'
          f'{args.episodes - 1})\n')
    print('| task | success rate | mean final block-goal dist (m) | mean max block lift (m) |')
    print('|---|---:|---:|---:|')
    for task in TASKS:
        r = scripted_success(task, args.episodes)
        print(f"| {task} | {r['success']:.0%} | {r['final_goal_dist_m']:.3f} | "
              f"{r['max_lift_m']:.3f} |", flush=True)


if __name__ == '__main__':
    main()
