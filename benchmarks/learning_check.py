"""Learning check: DrQ-v2 (state obs) on each task with the hand-written oracle reward.

Target (issue 11): >= 90 % eval success (10 deterministic episodes) within touch 15k,
grasp_lift 40k, push 60k env steps, on 3 of 3 seeds. Each (task, seed) cell runs in its own
process (``--jobs`` at a time, one torch thread each) and is merged into
``benchmarks/results/learning_check.json`` as soon as it ends, so an interrupted check resumes
with ``--skip-done``. A cell stops early once ``--stop-after`` consecutive evaluations reach 90 %
(``stopped_early`` in its record).

Prints a markdown table per task (eval success vs env steps per seed) and writes
``benchmarks/results/learning_check.md`` and ``benchmarks/results/learning_check_<task>.png``.

    python benchmarks/learning_check.py [--tasks touch,grasp_lift,push] [--seeds 3] [--jobs 2]
                                        [--skip-done] [--report-only] [--steps N]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing as mp
import os
from pathlib import Path
import subprocess
import time
from typing import Any

RESULTS = Path(__file__).resolve().parent / 'results'
RESULTS_JSON = RESULTS / 'learning_check.json'
TASKS = ('touch', 'grasp_lift', 'push')
ENV_IDS = {'touch': 'SelfAlign/Touch-v0', 'grasp_lift': 'SelfAlign/GraspLift-v0',
           'push': 'SelfAlign/Push-v0'}
#: Issue 11's budgets: >= 90 % eval success within these env steps.
BUDGETS = {'touch': 15_000, 'grasp_lift': 40_000, 'push': 60_000}
TARGET = 0.9


def commit() -> str:
    """Short commit of the working tree ('+dirty' when it has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=root, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return rev + ('+dirty' if dirty else '')


def steps_to(curve: list[list[float]], level: float = TARGET) -> int | None:
    """First env step of ``curve`` ([[step, success], ...]) whose success is >= ``level``."""
    return next((int(s) for s, v in curve if v >= level), None)


def run_cell(task: str, seed: int, budget: int, settings: dict[str, Any],
             stop_after: int) -> dict[str, Any]:
    """Train one seed on ``task`` with the oracle reward; the result record.

    ``settings`` holds the learner settings of the command line; optional ``'sim'`` (SimConfig
    fields) and ``'agent'`` (AgentConfig fields, e.g. ``{'nstep': 5}``) override the defaults
    for trials.
    """
    import gymnasium as gym
    import torch

    import selfalign_bringup.sim  # noqa: F401  (registers the SelfAlign/* envs)
    from selfalign_core import features, tasks
    from selfalign_policy.config import DrQV2Config
    from selfalign_policy.trainer import Callbacks, Trainer

    torch.set_num_threads(1)
    env = gym.make(ENV_IDS[task], sim_config=settings.get('sim') or None)
    cfg = DrQV2Config.from_dict({
        'agent': {'hidden_dim': settings['hidden'], 'lr': settings['lr'],
                  'stddev_steps': settings['std_steps'],
                  'update_every_steps': settings['update_every'],
                  'updates_per_step': settings.get('updates_per_step', 1),
                  **settings.get('agent', {})},
        'replay': {'capacity': max(budget + 1000, 10_000)},
        'trainer': {'seed': seed, 'eval_every_steps': settings['eval_every'],
                    'eval_episodes': settings['eval_episodes'], 'progress': False}})
    curve: list[list[float]] = []
    streak = [0]

    def on_eval(res: dict[str, float]) -> None:
        curve.append([int(res['env_step']), float(res['success_rate'])])
        streak[0] = streak[0] + 1 if res['success_rate'] >= TARGET else 0
        print(f'{task} seed {seed}: step {int(res["env_step"])} success '
              f'{100 * res["success_rate"]:.0f} %', flush=True)

    trainer = Trainer(env, cfg, lambda x: tasks.oracle_reward(task, features.unpack(x)),
                      task=task, callbacks=Callbacks(on_eval=on_eval))
    t0 = time.perf_counter()
    stopped = False
    while trainer.env_step < budget:
        trainer.train(min(trainer.env_step + settings['eval_every'], budget))
        if stop_after and streak[0] >= stop_after and trainer.env_step < budget:
            stopped = True
            break
    env.close()
    return {'task': task, 'seed': seed, 'reward': 'oracle', 'budget_steps': budget,
            'steps_to_90': steps_to(curve), 'curve': curve, 'env_steps': trainer.env_step,
            'stopped_early': stopped, 'wall_s': round(time.perf_counter() - t0, 1),
            'settings': settings, 'commit': commit()}


def _job(args: tuple) -> dict[str, Any]:
    return run_cell(*args)


def load() -> list[dict[str, Any]]:
    return load_rows(RESULTS_JSON)


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON list at ``path`` ([] if absent); NaN written by older scripts reads as None."""
    return json.loads(path.read_text(), parse_constant=lambda c: None) if path.exists() else []


def merge_row(path: Path, record: dict[str, Any], fields: tuple[str, ...],
              order: Any = None) -> None:
    """Merge ``record`` into the JSON list at ``path``, replacing the row with the same
    ``fields``; rows sorted by ``order`` if given. Runs at once (two cores) each merge under a
    file lock beside ``path``; written atomically (NaN as null)."""
    key = tuple(record[f] for f in fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix('.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [r for r in load_rows(path) if tuple(r[f] for f in fields) != key] + [record]
        if order is not None:
            rows.sort(key=order)
        tmp = path.with_suffix(f'.{os.getpid()}.tmp')
        tmp.write_text(json.dumps(rows, indent=1, default=lambda x: None) + '\n')
        tmp.replace(path)


def save(record: dict[str, Any]) -> None:
    """Merge one cell into the results file (replacing the same task/seed/reward)."""
    merge_row(RESULTS_JSON, record, ('task', 'seed', 'reward'),
              lambda r: (TASKS.index(r['task']), r['reward'], r['seed']))


def report(rows: list[dict[str, Any]], task_names: list[str]) -> list[str]:
    """Markdown tables per task; returns the lines (also printed)."""
    out: list[str] = []
    for task in task_names:
        cells = sorted((r for r in rows if r['task'] == task and r['reward'] == 'oracle'),
                       key=lambda r: r['seed'])
        if not cells:
            continue
        budget = BUDGETS[task]
        st = cells[0]['settings']
        out += [f'### {task}: DrQ-v2 state, oracle reward, hidden {st["hidden"]}, lr {st["lr"]}, '
                f'std linear(1.0, 0.1, {st["std_steps"]}), '
                f'{st.get("updates_per_step", 1)} update(s) every {st["update_every"]} env '
                f'step(s), budget {budget // 1000}k', '',
                '| env steps | ' + ' | '.join(f'seed {r["seed"]}' for r in cells) + ' |',
                '|---:|' + '---:|' * len(cells)]
        steps = sorted({int(s) for r in cells for s, _ in r['curve']})
        for s in steps:
            row = []
            for r in cells:
                c = dict((int(a), b) for a, b in r['curve'])
                row.append(f'{100 * c[s]:.0f} %' if s in c else
                           ('stopped' if r['stopped_early'] and s > max(c) else '—'))
            out.append(f'| {s} | ' + ' | '.join(row) + ' |')
        ok = [r['steps_to_90'] is not None and r['steps_to_90'] <= budget for r in cells]
        out += ['', 'steps to 90 %: ' + ', '.join(
            f'seed {r["seed"]}: {r["steps_to_90"] if r["steps_to_90"] is not None else "never"}'
            for r in cells) + f' — target (>= 90 % within {budget // 1000}k on every seed): '
            f'{"MET" if all(ok) and len(ok) >= 3 else "NOT MET"} ({sum(ok)}/{len(ok)} seeds; '
            f'commit {cells[0]["commit"]})', '']
    print('\n'.join(out))
    return out


def plot(rows: list[dict[str, Any]], task_names: list[str]) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    for task in task_names:
        cells = [r for r in rows if r['task'] == task and r['reward'] == 'oracle']
        if not cells:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in sorted(cells, key=lambda r: r['seed']):
            xs, ys = zip(*r['curve']) if r['curve'] else ((), ())
            ax.plot(xs, [100 * y for y in ys], marker='o', label=f'seed {r["seed"]}')
        ax.axhline(100 * TARGET, ls='--', c='grey', lw=1)
        ax.axvline(BUDGETS[task], ls=':', c='grey', lw=1)
        ax.set_xlabel('env steps')
        ax.set_ylabel('eval success % (10 episodes)')
        ax.set_ylim(-5, 105)
        ax.set_title(f'DrQ-v2 state, {task}, oracle reward')
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f'learning_check_{task}.png', dpi=100)
        plt.close(fig)


def add_learner_args(ap: argparse.ArgumentParser) -> None:
    """The learner and evaluation options of a cell (``learner_settings`` reads them)."""
    ap.add_argument('--eval-every', type=int, default=2500)
    ap.add_argument('--eval-episodes', type=int, default=10)
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--lr', type=float, default=3e-4)
    ap.add_argument('--std-steps', type=int, default=30_000)
    ap.add_argument('--update-every', type=int, default=1)
    ap.add_argument('--updates-per-step', type=int, default=1,
                    help='gradient updates each time one is due (update-to-data ratio)')


def learner_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``run_cell``'s settings from the options of ``add_learner_args``."""
    settings = {'hidden': args.hidden, 'lr': args.lr, 'std_steps': args.std_steps,
                'update_every': args.update_every, 'eval_every': args.eval_every,
                'eval_episodes': args.eval_episodes}
    if args.updates_per_step != 1:
        settings['updates_per_step'] = args.updates_per_step
    return settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tasks', default=','.join(TASKS))
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--first-seed', type=int, default=0)
    ap.add_argument('--steps', type=int, default=0,
                    help='budget for every task (default: the issue-11 budget per task)')
    ap.add_argument('--jobs', type=int, default=2, help='cells at once (2 on a 2-core machine)')
    ap.add_argument('--skip-done', action='store_true',
                    help='skip cells already in the results file')
    ap.add_argument('--report-only', action='store_true')
    add_learner_args(ap)
    ap.add_argument('--stop-after', type=int, default=2,
                    help='stop a cell after this many consecutive evaluations >= 90 %% (0: never)')
    args = ap.parse_args()
    task_names = [t for t in args.tasks.split(',') if t]
    for t in task_names:
        if t not in TASKS:
            ap.error(f'--tasks: unknown task {t!r}; choose from {TASKS}')
    settings = learner_settings(args)
    if not args.report_only:
        done = {(r['task'], r['seed']) for r in load() if r['reward'] == 'oracle'}
        jobs = [(t, s, args.steps or BUDGETS[t], settings, args.stop_after)
                for t in task_names
                for s in range(args.first_seed, args.first_seed + args.seeds)
                if not (args.skip_done and (t, s) in done)]
        print(f'{len(jobs)} cell(s) to run, {args.jobs} at a time', flush=True)
        with mp.get_context('spawn').Pool(max(1, args.jobs), maxtasksperchild=1) as pool:
            for rec in pool.imap_unordered(_job, jobs):
                save(rec)
                print(f'done {rec["task"]} seed {rec["seed"]}: steps to 90 % '
                      f'{rec["steps_to_90"]}, {rec["env_steps"]} steps in {rec["wall_s"]:.0f} s',
                      flush=True)
    rows = load()
    lines = report(rows, list(TASKS))
    if rows:
        (RESULTS / 'learning_check.md').write_text('\n'.join(lines) + '\n')
        plot(rows, list(TASKS))


if __name__ == '__main__':
    main()
