"""Learning check: DrQ-v2 (state obs) on the sim's touch task with the hand-written oracle reward.

Prints evaluation success rate vs env steps per seed as a markdown table and saves the curves to
benchmarks/out/learning_check_<task>.png. Target (issue 3): >= 95 % success within 30k env steps
on every seed. A seed stops early once ``--stop-after`` consecutive evaluations reach 95 %
(later cells then read 'stopped'); ``--stop-after 0`` runs every seed to the end.

    python benchmarks/learning_check.py [--task touch] [--seeds 3] [--steps 30000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time

import gymnasium as gym
import torch

import selfalign_bringup.sim  # noqa: F401  (registers the SelfAlign/* envs)
from selfalign_policy.config import DrQV2Config
from selfalign_policy.trainer import Callbacks, Trainer
from selfalign_reward import features, tasks

ENV_IDS = {'touch': 'SelfAlign/Touch-v0', 'grasp_lift': 'SelfAlign/GraspLift-v0',
           'push': 'SelfAlign/Push-v0'}
OUT = Path(__file__).resolve().parent / 'out'


def run_seed(task: str, seed: int, args: argparse.Namespace) -> dict[int, float]:
    env = gym.make(ENV_IDS[task])
    cfg = DrQV2Config.from_dict({
        'agent': {'hidden_dim': args.hidden, 'lr': args.lr, 'stddev_steps': args.std_steps,
                  'update_every_steps': args.update_every},
        'replay': {'capacity': max(args.steps + 1000, 10_000)},
        'trainer': {'seed': seed, 'eval_every_steps': args.eval_every,
                    'eval_episodes': args.eval_episodes, 'progress': False}})
    curve: dict[int, float] = {}
    streak = [0]

    def on_eval(res: dict[str, float]) -> None:
        curve[int(res['env_step'])] = res['success_rate']
        streak[0] = streak[0] + 1 if res['success_rate'] >= 0.95 else 0
        print(json.dumps({'seed': seed, **res}), flush=True)

    trainer = Trainer(env, cfg, lambda x: tasks.oracle_reward(task, features.unpack(x)),
                      task=task, callbacks=Callbacks(on_eval=on_eval))
    t0 = time.perf_counter()
    while trainer.env_step < args.steps:
        trainer.train(min(trainer.env_step + args.eval_every, args.steps))
        if args.stop_after and streak[0] >= args.stop_after:
            break
    print(f'seed {seed}: {trainer.env_step} env steps, {trainer.update_count} updates in '
          f'{time.perf_counter() - t0:.0f} s', flush=True)
    env.close()
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--task', default='touch', choices=sorted(ENV_IDS))
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--steps', type=int, default=30_000)
    ap.add_argument('--eval-every', type=int, default=2500)
    ap.add_argument('--eval-episodes', type=int, default=10)
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--lr', type=float, default=1e-4)
    ap.add_argument('--std-steps', type=int, default=100_000)
    ap.add_argument('--update-every', type=int, default=2)
    ap.add_argument('--stop-after', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    curves = {seed: run_seed(args.task, seed, args) for seed in range(args.seeds)}
    steps = sorted({s for c in curves.values() for s in c})
    print(f'\n### DrQ-v2 state, {args.task}, oracle reward, hidden {args.hidden}, lr {args.lr}, '
          f'update every {args.update_every}, std linear(1.0, 0.1, {args.std_steps})\n')
    print('| env steps | ' + ' | '.join(f'seed {s}' for s in curves) + ' | mean |')
    print('|---:|' + '---:|' * (len(curves) + 1))
    for st in steps:
        cells, vals = [], []
        for c in curves.values():
            if st in c:
                cells.append(f'{100 * c[st]:.0f} %')
                vals.append(c[st])
            else:
                cells.append('stopped')
                vals.append(c[max(c)] if c and st > max(c) else 0.0)
        print(f'| {st} | ' + ' | '.join(cells) + f' | {100 * sum(vals) / len(vals):.0f} % |')
    first = {s: next((k for k in sorted(c) if c[k] >= 0.95), None) for s, c in curves.items()}
    print('\nfirst eval >= 95 %: ' + ', '.join(f'seed {s}: {v}' for s, v in first.items()))
    ok = all(v is not None and v <= 30_000 for v in first.values())
    print(f'target (>= 95 % within 30k env steps, every seed): {"MET" if ok else "MISSED"}')
    OUT.mkdir(parents=True, exist_ok=True)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for s, c in curves.items():
        xs = sorted(c)
        ax.plot(xs, [100 * c[x] for x in xs], marker='o', label=f'seed {s}')
    ax.axhline(95, ls='--', c='grey', lw=1)
    ax.set_xlabel('env steps')
    ax.set_ylabel('eval success %')
    ax.set_title(f'DrQ-v2 state, {args.task}, oracle reward')
    ax.legend()
    fig.tight_layout()
    path = OUT / f'learning_check_{args.task}.png'
    fig.savefig(path, dpi=100)
    print(f'saved {path}')


if __name__ == '__main__':
    main()
