"""Paper table: fixed initial LLM reward vs self-alignment (scripted teacher), DrQ-v2 state obs.

For each task and seed, two in-process runs (``selfalign_bringup.experiment``): 'fixed' keeps the
template's initial θ (the paper's mistakes: touch force threshold 1 N, push weight 2.0),
'selfalign' re-fits θ to the teacher's rankings every ``--update-every`` env steps. Measured:
env steps to the first evaluation at 100 % success (or the final / best success rate), the final
θ of the parameters the paper reports, LLM calls and tokens. Runs are independent processes
(``--jobs`` at a time, one torch thread each); each run's result is saved as JSON under
``benchmarks/out/paper_runs/`` as soon as it ends, so ``--report-only`` can re-print the table.
Prints markdown tables and writes ``benchmarks/out/paper_<task>.png`` (eval success vs steps).

    python benchmarks/paper_table.py [--tasks touch,grasp_lift,push] [--seeds 3] [--steps N]
                                     [--jobs 2] [--report-only]

Targets (issue 6): touch <= 15k steps and >= 4x fewer than fixed; grasp_lift <= 15k; push
>= 90 % success while fixed stays <= 20 % and w_push moves from 2.0 to >= 10.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
from pathlib import Path
import statistics
import sys
import time
from typing import Any

OUT = Path(__file__).resolve().parent / 'out'
RUNS = OUT / 'paper_runs'
TASKS = ('touch', 'grasp_lift', 'push')
CONDITIONS = ('fixed', 'selfalign')
DEFAULT_STEPS = {'touch': 20_000, 'grasp_lift': 20_000, 'push': 30_000}
#: θ entries the paper reports (others are in the JSON and the run dirs).
KEY_PARAMS = {'touch': ('force_threshold', 'w_touch'), 'grasp_lift': ('grip_force', 'w_lift'),
              'push': ('w_push',)}


def _job(args: tuple[str, int, str, int, dict[str, Any]]) -> dict[str, Any]:
    task, seed, condition, steps, overrides = args
    from selfalign_bringup.experiment import run_experiment

    t0 = time.perf_counter()
    path = RUNS / f'{task}-{condition}-s{seed}.json'
    res = run_experiment(task, seed, condition, steps, snapshot_path=str(path),
                         **overrides).to_dict()
    res['overrides'] = overrides
    path.write_text(json.dumps(res, indent=1, default=float))
    print(f'done {task} {condition} seed {seed}: {res["env_steps"]} steps, '
          f'steps to 100 % {res["steps_to_success"]}, final {res["final_success_rate"]:.2f}, '
          f'{time.perf_counter() - t0:.0f} s', flush=True)
    return res


def _done(task: str, condition: str, seed: int) -> bool:
    path = RUNS / f'{task}-{condition}-s{seed}.json'
    return path.exists() and not json.loads(path.read_text()).get('partial', False)


def _fmt_steps(r: dict[str, Any]) -> str:
    s = r['steps_to_success']
    cut = ' (run cut short)' if r.get('partial') else ''
    if s is not None:
        return f'{s / 1000:.1f}k'
    return f'> {r["env_steps"] / 1000:.0f}k (final {100 * r["final_success_rate"]:.0f} %){cut}'


def _fmt_theta(r: dict[str, Any], task: str) -> str:
    th = r['final_theta']
    return ', '.join(f'{k} {th[k]:.3g}' for k in KEY_PARAMS[task] if k in th)


def load_runs(tasks: list[str], seeds: list[int]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for task in tasks:
        for cond in CONDITIONS:
            for seed in seeds:
                p = RUNS / f'{task}-{cond}-s{seed}.json'
                if p.exists():
                    out.setdefault((task, cond), []).append(json.loads(p.read_text()))
    return out


def _steps_value(r: dict[str, Any]) -> float:
    """Steps to 100 %, or the run length as a lower bound when never reached."""
    s = r['steps_to_success']
    return float(s) if s is not None else float(r['env_steps'])


def report(runs: dict[tuple[str, str], list[dict[str, Any]]], tasks: list[str]) -> list[str]:
    """Print the tables; returns target verdict lines."""
    print('\n### Per run (DrQ-v2 state obs, scripted teacher)\n')
    print('| task | condition | seed | env steps to 100 % eval success | best / final success '
          '| final θ | alignment updates | LLM calls | LLM tokens | wall s |')
    print('|---|---|---:|---:|---:|---|---:|---:|---:|---:|')
    for task in tasks:
        for cond in CONDITIONS:
            for r in sorted(runs.get((task, cond), []), key=lambda r: r['seed']):
                ok = sum(not u['status'].startswith('skipped') for u in r['updates'])
                fa = sum(bool(u['failure_analysis']) for u in r['updates'])
                tok = int(r['llm_usage'].get('prompt_tokens', 0)) + \
                    int(r['llm_usage'].get('completion_tokens', 0))
                print(f'| {task} | {cond} | {r["seed"]} | {_fmt_steps(r)} | '
                      f'{100 * r["best_success_rate"]:.0f} / {100 * r["final_success_rate"]:.0f}'
                      f' % | {_fmt_theta(r, task)} | {ok} ({fa} failure analyses) | '
                      f'{r["llm_usage"].get("calls", 0)} | {tok} | {r["wall_s"]:.0f} |')
    print('\n### Summary (mean over seeds; "≥" = some seed never reached 100 %, run length '
          'counted)\n')
    print('| task | fixed: steps to 100 % | self-align: steps to 100 % | speed-up | '
          'fixed: final success | self-align: final success | θ initial -> self-aligned '
          '(mean) | LLM calls / tokens per self-align run |')
    print('|---|---:|---:|---:|---:|---:|---|---:|')
    verdicts = []
    for task in tasks:
        fx, sa = runs.get((task, 'fixed'), []), runs.get((task, 'selfalign'), [])
        if not fx and not sa:
            continue

        def steps(rs: list[dict[str, Any]]) -> tuple[str, float]:
            if not rs:
                return 'n/a', math.nan
            m = statistics.mean(_steps_value(r) for r in rs)
            lower = any(r['steps_to_success'] is None for r in rs)
            return f'{"≥ " if lower else ""}{m / 1000:.1f}k', m

        def succ(rs: list[dict[str, Any]]) -> float:
            return statistics.mean(r['final_success_rate'] for r in rs) if rs else math.nan

        fs, fm = steps(fx)
        ss, sm = steps(sa)
        speed = fm / sm if sa and fx else math.nan
        fx_lower = any(r['steps_to_success'] is None for r in fx)
        sp = f'{"≥ " if fx_lower else ""}{speed:.1f}×' if math.isfinite(speed) else 'n/a'
        theta = []
        for k in KEY_PARAMS[task]:
            if sa and k in sa[0]['final_theta']:
                init = sa[0]['initial_theta'][k]
                theta.append(f'{k} {init:.3g} -> '
                             f'{statistics.mean(r["final_theta"][k] for r in sa):.3g}')
        calls = statistics.mean(r['llm_usage'].get('calls', 0) for r in sa) if sa else math.nan
        toks = statistics.mean(int(r['llm_usage'].get('prompt_tokens', 0))
                               + int(r['llm_usage'].get('completion_tokens', 0))
                               for r in sa) if sa else math.nan
        print(f'| {task} ({len(fx)}+{len(sa)} seeds) | {fs} | {ss} | {sp} | '
              f'{100 * succ(fx):.0f} % | {100 * succ(sa):.0f} % | {"; ".join(theta)} | '
              f'{calls:.0f} / {toks:.0f} |')
        if task == 'touch' and sa:
            worst = max(_steps_value(r) for r in sa)
            verdicts.append(f'touch: self-align <= 15k on every seed: '
                            f'{"MET" if all(r["steps_to_success"] is not None for r in sa) and worst <= 15_000 else "MISSED"} '  # noqa: E501
                            f'(worst {worst / 1000:.1f}k); >= 4x fewer than fixed: '
                            f'{"MET" if speed >= 4 else "MISSED"} ({sp})')
        if task == 'grasp_lift' and sa:
            worst = max(_steps_value(r) for r in sa)
            met = all(r['steps_to_success'] is not None for r in sa) and worst <= 15_000
            verdicts.append(f'grasp_lift: self-align <= 15k on every seed: '
                            f'{"MET" if met else "MISSED"} (worst {worst / 1000:.1f}k)')
        if task == 'push' and sa:
            w = [r['final_theta'].get('w_push', math.nan) for r in sa]
            verdicts.append(
                f'push: self-align >= 90 %: {"MET" if succ(sa) >= 0.9 else "MISSED"} '
                f'({100 * succ(sa):.0f} %); fixed <= 20 %: '
                f'{"MET" if fx and succ(fx) <= 0.2 else "MISSED"} ({100 * succ(fx):.0f} %); '
                f'w_push 2.0 -> >= 10: {"MET" if min(w) >= 10 else "MISSED"} '
                f'({", ".join(f"{x:.3g}" for x in w)})')
    print()
    for v in verdicts:
        print('- ' + v)
    return verdicts


def plot(runs: dict[tuple[str, str], list[dict[str, Any]]], tasks: list[str]) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    for task in tasks:
        if not any((task, c) in runs for c in CONDITIONS):
            continue
        fig, (ax, axt) = plt.subplots(1, 2, figsize=(10, 3.8))
        for cond, color in zip(CONDITIONS, ('tab:red', 'tab:blue')):
            for i, r in enumerate(sorted(runs.get((task, cond), []), key=lambda r: r['seed'])):
                xs = [e['env_step'] for e in r['evals']]
                ax.plot(xs, [100 * e['success_rate'] for e in r['evals']], '-', color=color,
                        alpha=0.7, label=cond if i == 0 else None)
                if cond == 'selfalign':
                    for k in KEY_PARAMS[task]:
                        axt.plot([0] + [u['env_step'] for u in r['updates']],
                                 [r['initial_theta'][k]] + [u['theta_after'][k]
                                                            for u in r['updates']],
                                 'o-', ms=3, label=f'{k} s{r["seed"]}')
        ax.set(xlabel='env steps', ylabel='eval success %', ylim=(-3, 103),
               title=f'{task}: fixed initial reward vs self-alignment')
        ax.grid(alpha=0.3)
        ax.legend()
        axt.set(xlabel='env steps', ylabel='θ', yscale='log', title='self-aligned θ')
        axt.grid(alpha=0.3)
        axt.legend(fontsize='x-small')
        fig.tight_layout()
        path = OUT / f'paper_{task}.png'
        fig.savefig(path, dpi=100)
        plt.close(fig)
        print(f'saved {path}')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tasks', default=','.join(TASKS))
    ap.add_argument('--seeds', type=int, default=3, help='seeds 0..N-1')
    ap.add_argument('--seed-start', type=int, default=0)
    ap.add_argument('--conditions', default=','.join(CONDITIONS))
    ap.add_argument('--steps', type=int, default=0,
                    help=f'env steps per run (0: per task {DEFAULT_STEPS})')
    ap.add_argument('--task-steps', default='',
                    help="per-task env steps, e.g. 'touch=15000,push=10000' (over --steps)")
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--update-every', type=int, default=2000,
                    help='reward_update_every_steps of the self-alignment runs')
    ap.add_argument('--num-ranked', type=int, default=8)
    ap.add_argument('--mh-samples', type=int, default=2000)
    ap.add_argument('--eval-every', type=int, default=1000)
    ap.add_argument('--eval-episodes', type=int, default=10)
    ap.add_argument('--stop-after', type=int, default=2,
                    help='stop a run after this many consecutive 100 %% evals (0: never)')
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--lr', type=float, default=1e-4)
    ap.add_argument('--run-root', default='', help='also write a RunDir per run here')
    ap.add_argument('--skip-done', action='store_true',
                    help='skip runs whose finished JSON is already in benchmarks/out/paper_runs')
    ap.add_argument('--skip', default='',
                    help="runs to leave out, e.g. 'touch-fixed-s0,touch-selfalign-s0'")
    ap.add_argument('--quiet', action='store_true', help='no per-evaluation lines')
    ap.add_argument('--report-only', action='store_true',
                    help='re-print the table from benchmarks/out/paper_runs/*.json')
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(',') if t]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        sys.exit(f'--tasks: unknown {bad}; choose from {TASKS}')
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    conds = [c for c in args.conditions.split(',') if c]
    RUNS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        overrides = {'reward_update_every_steps': args.update_every,
                     'num_ranked': args.num_ranked, 'mh_samples': args.mh_samples,
                     'eval_every_steps': args.eval_every, 'eval_episodes': args.eval_episodes,
                     'stop_after_success': args.stop_after, 'hidden_dim': args.hidden,
                     'lr': args.lr, 'run_root': args.run_root, 'num_threads': 1,
                     'verbose': not args.quiet}
        per_task = {t: args.steps or DEFAULT_STEPS[t] for t in TASKS}
        for item in filter(None, args.task_steps.split(',')):
            name, _, value = item.partition('=')
            if name not in TASKS or not value.isdigit():
                sys.exit(f"--task-steps: bad entry {item!r}; write task=steps, e.g. 'push=10000'")
            per_task[name] = int(value)
        # seed-major order: every task's first seed finishes before any task's second
        jobs = [(t, s, c, per_task[t], overrides)
                for s in seeds for t in tasks for c in conds]
        if args.skip_done:
            jobs = [j for j in jobs if not _done(j[0], j[2], j[1])]
        skip = set(filter(None, args.skip.split(',')))
        jobs = [j for j in jobs if f'{j[0]}-{j[2]}-s{j[1]}' not in skip]
        print(f'{len(jobs)} runs, {args.jobs} at a time: {overrides}', flush=True)
        t0 = time.perf_counter()
        ctx = mp.get_context('spawn')
        with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:
            for _ in pool.imap_unordered(_job, jobs):
                pass
        print(f'all runs done in {time.perf_counter() - t0:.0f} s', flush=True)
    runs = load_runs(tasks, seeds)
    report(runs, tasks)
    plot(runs, tasks)


if __name__ == '__main__':
    main()
