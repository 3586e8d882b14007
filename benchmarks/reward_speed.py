"""Reward evaluation and Metropolis–Hastings speed (selfalign_reward), printed as markdown tables.

    python benchmarks/reward_speed.py [--mh-samples 10000] [--episodes 32] [--steps 100]

Measures, on the shipped push and touch templates: MH wall time for 10k samples over 32
episodes x 100 steps (the outer loop's inner cost; target <= 1 s on the 2-core dev machine),
per-proposal cost, reward throughput (transitions/s) for a policy batch of 256 and a
100k-transition replay re-score, and one outer-loop re-fit (``outer_loop.refit_theta``) with
``--rankings`` rankings of 8 kept, under the one-split gate and the 4-fold cross-validated one
(``--refit-samples`` MH samples, as the task configs use). numpy single-threaded for
comparable numbers.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1')

import time  # noqa: E402

import numpy as np  # noqa: E402

from selfalign_core.episode import stack_features  # noqa: E402
from selfalign_reward.alignment import metropolis_hastings  # noqa: E402
from selfalign_reward.evaluate import RewardFunction  # noqa: E402
from selfalign_reward.outer_loop import OuterLoop, OuterLoopConfig, refit_theta  # noqa: E402
from selfalign_reward.sandbox import sample_features  # noqa: E402
from selfalign_reward.synthetic import random_episodes  # noqa: E402
from selfalign_reward.template import load_reference_template  # noqa: E402


def best_of(fn, repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls, s."""
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_task(task: str, args: argparse.Namespace) -> tuple[tuple, list[tuple]]:
    """One MH row and the throughput rows for the reference template of ``task``."""
    fn = RewardFunction(load_reference_template(task))
    rng = np.random.default_rng(0)
    x = stack_features(random_episodes(task, args.episodes, rng, steps=args.steps))
    ranks = rng.permutation(args.episodes)
    burn = args.mh_samples // 5
    t0, c0 = time.perf_counter(), time.process_time()
    res = metropolis_hastings(fn, x, ranks, num_samples=args.mh_samples, burn_in=burn,
                              rng=np.random.default_rng(0))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    mh = (task, args.episodes, args.steps, args.mh_samples, burn, dt, cpu,
          1e6 * cpu / (args.mh_samples + burn), res.acceptance_rate)
    batch = sample_features(256, seed=1)
    prepared = fn.prepare(batch)
    theta = fn.template.initial_theta()
    n_rep = 200
    rows = []
    t = best_of(lambda: [fn.total(batch, theta) for _ in range(n_rep)], 3) / n_rep
    rows.append((task, 'policy batch (packed, unpacked per call)', 256, t, 256 / t))
    t = best_of(lambda: [fn.total(prepared, theta) for _ in range(n_rep)], 3) / n_rep
    rows.append((task, 'policy batch (prepared once)', 256, t, 256 / t))
    big = np.repeat(sample_features(1000, seed=2), 100, axis=0)  # 100k transitions
    t = best_of(lambda: fn.total(big, theta), 3)
    rows.append((task, 'replay re-score (100k, one call)', len(big), t, len(big) / t))
    return mh, rows


def bench_refit(task: str, folds: int, args: argparse.Namespace) -> tuple:
    """Wall and CPU s of the last of ``args.rankings`` re-fits (all earlier rankings kept)."""
    fn = RewardFunction(load_reference_template(task))
    rng = np.random.default_rng(0)
    loop = OuterLoop(OuterLoopConfig(num_ranked=8, gate_folds=folds))
    theta = fn.theta_dict(None)
    for k in range(args.rankings):
        eps = random_episodes(task, 8, rng, steps=args.steps)
        ranks = rng.permutation(8)
        t0, c0 = time.perf_counter(), time.process_time()
        res = refit_theta(fn, fn.template, theta, eps, ranks, 0.5, loop, lambda tau: None,
                          mh_samples=args.refit_samples, mh_burn_in=args.refit_samples // 4,
                          beta=1.0, prior_width=0.5, rng=np.random.default_rng(k))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return (task, folds, args.rankings, res.num_fit_pairs, res.num_heldout_pairs, dt, cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--mh-samples', type=int, default=10_000)
    ap.add_argument('--episodes', type=int, default=32)
    ap.add_argument('--steps', type=int, default=100)
    ap.add_argument('--rankings', type=int, default=16,
                    help='rankings kept when the timed re-fit runs')
    ap.add_argument('--refit-samples', type=int, default=2000)
    args = ap.parse_args()
    results = [bench_task(task, args) for task in ('push', 'touch')]
    print('## Metropolis–Hastings (random-walk, adaptive step), reference templates\n')
    print('| task | episodes | steps | samples | burn-in | wall s | CPU s | CPU µs / proposal '
          '| acceptance |')
    print('|---|---|---|---|---|---|---|---|---|')
    for (task, n, t, s, b, dt, cpu, us, acc), _ in results:
        print(f'| {task} | {n} | {t} | {s} | {b} | {dt:.2f} | {cpu:.2f} | {us:.0f} | {acc:.2f} |')
    print('\n(wall > CPU means other processes shared the 2 cores during the run)')
    print('\n## Reward evaluation throughput (R_θ total, float64)\n')
    print('| task | workload | transitions / call | ms / call | transitions / s |')
    print('|---|---|---|---|---|')
    for _, rows in results:
        for task, what, n, t, tps in rows:
            print(f'| {task} | {what} | {n} | {1e3 * t:.3f} | {tps:,.0f} |')
    print(f'\n## One outer-loop re-fit (refit_theta, {args.refit_samples} MH samples, '
          f'{args.rankings} rankings of 8 kept)\n')
    print('| task | gate | fit pairs | test pairs | wall s | CPU s |')
    print('|---|---|---:|---:|---:|---:|')
    for task in ('push', 'touch'):
        for folds in (1, 4):
            _, k, _, n_fit, n_test, dt, cpu = bench_refit(task, folds, args)
            gate = 'one held-out split' if k == 1 else f'{k}-fold cross-validated'
            print(f'| {task} | {gate} | {n_fit} | {n_test} | {dt:.2f} | {cpu:.2f} |')


if __name__ == '__main__':
    main()
