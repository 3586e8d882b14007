"""Paper table: fixed initial LLM reward vs self-alignment (scripted teacher), DrQ-v2 state obs.

For each task, sweep and seed, two in-process runs (``selfalign_bringup.experiment``): 'fixed'
keeps the template's initial θ (the paper's mistakes: touch force threshold 1 N, push weight 2.0),
'selfalign' re-fits θ to the teacher's rankings (mistake rate 0.1) every ``--update-every`` env
steps. Sweeps (issue 11, beyond the paper) scale the task's key parameter's initial value:
'paper' (× 1), 'x0.1', 'x10' (clipped to its range); 'above' (touch only) starts the force
threshold at 40 N, above every contact force a touch produces in the simulator; 'above-flat'
(touch only) also starts the approach term at its flattest (reach_sharpness 1 /m), so that
approaching alone pays little for the last centimetres and a touch pays only through the
touch term the threshold blocks; 'standoff' (touch only) starts from another template
(``benchmarks/templates/touch_standoff.py``) whose approach term aims 5 cm short of the block,
with the 40 N threshold: nothing pays for the last 5 cm.

Each cell is merged into ``benchmarks/results/paper_table.json`` as soon as it ends
(``--skip-done`` resumes an interrupted table; a cell cut short leaves its partial curve in
``benchmarks/out/paper_runs/``). Prints markdown tables (also written to
``benchmarks/results/paper_table.md``) and plots ``benchmarks/results/paper_<task>.png`` (eval
success vs env steps, mean and range over seeds).

    python benchmarks/paper_table.py [--tasks touch,grasp_lift,push] [--seeds 3] [--jobs 2]
        [--sweeps paper,x0.1,x10] [--conditions fixed,selfalign] [--skip-done] [--report-only]

Budgets (issue 11): touch 30k, grasp_lift 40k, push 100k env steps.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_check import commit, load_rows, merge_row, steps_to  # noqa: E402

OUT = Path(__file__).resolve().parent / 'out'
RUNS = OUT / 'paper_runs'
RESULTS = Path(__file__).resolve().parent / 'results'
TABLE_JSON = RESULTS / 'paper_table.json'
RESULTS_JSON = TABLE_JSON  # where rows go: the table, or a trial file (--results)
TASKS = ('touch', 'grasp_lift', 'push')
CONDITIONS = ('fixed', 'selfalign')
SWEEPS = {'paper': 1.0, 'x0.1': 0.1, 'x10': 10.0, 'above': math.nan, 'above-flat': math.nan,
          'standoff': math.nan}
#: Set-ups that are not a scale of the key parameter: sweep -> task -> initial-θ override.
#: 'above': an initial threshold above the contact forces a touch produces in the sim (17-27 N
#: measured with scripted touches, docs/tasks.md), so the fixed reward's touch term never fires.
#: 'above-flat': that, with the approach term at its flattest (1 - tanh(1 /m · d) gains 0.01
#: from 1 cm to touching), so reaching alone hardly pays for the touch.
#: 'standoff': the initial reward is another template (``SETUP_TEMPLATES``): its approach term
#: aims 5 cm short of the block and its threshold is 40 N, so nothing pays for the last 5 cm.
SETUPS = {'above': {'touch': {'force_threshold': 40.0}},
          'above-flat': {'touch': {'force_threshold': 40.0, 'reach_sharpness': 1.0}},
          'standoff': {'touch': {}}}
#: Set-ups whose initial reward is a template file instead of the LLM's proposal.
SETUP_TEMPLATES = {'standoff': {'touch': Path(__file__).resolve().parent / 'templates'
                                / 'touch_standoff.py'}}
BUDGETS = {'touch': 30_000, 'grasp_lift': 40_000, 'push': 100_000}
#: The parameter each task's sweep scales, and the θ entries the table shows.
KEY_PARAM = {'touch': 'force_threshold', 'grasp_lift': 'grip_force', 'push': 'w_push'}


def sweep_theta(task: str, sweep: str) -> dict[str, float]:
    """The initial-θ override of a sweep: the key parameter × factor, clipped to its range."""
    if sweep == 'paper':
        return {}
    if sweep in SETUPS:
        if task not in SETUPS[sweep]:
            raise ValueError(f'sweep {sweep!r} is defined for {sorted(SETUPS[sweep])} only')
        return dict(SETUPS[sweep][task])
    from selfalign_reward.template import load_reference_template
    spec = load_reference_template(task).spec(KEY_PARAM[task])
    return {spec.name: float(min(max(spec.init * SWEEPS[sweep], spec.lower), spec.upper))}


def _job(args: tuple[str, int, str, str, int, dict[str, Any]]) -> dict[str, Any]:
    task, seed, condition, sweep, steps, overrides = args
    from selfalign_bringup.experiment import run_experiment

    RUNS.mkdir(parents=True, exist_ok=True)
    rev = commit()  # the code this run imports: at its start, not at its end (hours later)
    snap = RUNS / f'{task}-{condition}-{sweep}-s{seed}.json'
    template = SETUP_TEMPLATES.get(sweep, {}).get(task)
    overrides = dict(overrides)
    theta = {**sweep_theta(task, sweep), **overrides.pop('initial_theta', {})}
    res = run_experiment(task, seed, condition, steps, snapshot_path=str(snap),
                         initial_theta=theta, template_file=str(template) if template else '',
                         **overrides).to_dict()
    curve = [[e['env_step'], e['success_rate']] for e in res['evals']]
    return with_update_counts({
        'task': task, 'condition': condition, 'sweep': sweep, 'seed': seed,
        'initial_theta': res['initial_theta'], 'final_theta': res['final_theta'],
        'budget_steps': steps, 'env_steps': res['env_steps'], 'steps_to_90': steps_to(curve),
        'best_success': res['best_success_rate'], 'final_success': res['final_success_rate'],
        'updates_tried': len(res['updates']),
        'llm_calls': int(res['llm_usage'].get('calls', 0)),
        'llm_tokens': int(res['llm_usage'].get('prompt_tokens', 0))
        + int(res['llm_usage'].get('completion_tokens', 0)),
        'curve': curve,
        'update_log': [{k: u[k] for k in ('env_step', 'status', 'theta_before', 'theta_after',
                                          'kendall_tau_before', 'kendall_tau_after',
                                          'heldout_before', 'heldout_after', 'theta_move',
                                          'success_before', 'success_after', 'decision')}
                       for u in res['updates']],
        'critic_target_tau': overrides['critic_target_tau'],
        'wall_s': round(res['wall_s'], 1), 'settings': overrides, 'commit': rev})


def with_update_counts(row: dict[str, Any]) -> dict[str, Any]:
    """``updates`` (applied updates that moved θ) and ``max_drop_after_update`` (None without
    one measured) from the row's ``update_log``, by the experiment's own rule
    (``experiment.moved_updates``, ``max_drop_after``); a row without a log is returned as it
    is."""
    if 'update_log' not in row:
        return row
    from selfalign_bringup.experiment import max_drop_after, moved_updates
    drop = max_drop_after(row['update_log'])
    return {**row, 'updates': len(moved_updates(row['update_log'])),
            'max_drop_after_update': None if math.isnan(drop) else drop}


#: What identifies a cell: the set-up and the seed, and the learner setting that has been
#: varied (the target critic's soft update rate; rows from before the field was recorded
#: were given DrQ-v2's 0.01, the only value the learner had then).
KEY_FIELDS = ('task', 'condition', 'sweep', 'seed', 'critic_target_tau')


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r[f] for f in KEY_FIELDS)


def default_critic_tau(task: str) -> float:
    """The learner's critic_target_tau when ``--critic-tau`` is not given: what the product
    trains ``task`` with (its ``config/<task>.yaml``, else ExperimentConfig's)."""
    from selfalign_bringup import wiring
    from selfalign_bringup.experiment import ExperimentConfig

    policy = wiring.resolve(wiring.Args(task=task)).get('policy_node', {})
    return float(policy.get('critic_target_tau', ExperimentConfig.critic_target_tau))


def load() -> list[dict[str, Any]]:
    return [with_update_counts(r) for r in load_rows(RESULTS_JSON)]


def save(record: dict[str, Any]) -> None:
    """Merge one cell into the results file (replacing the row with the same KEY_FIELDS)."""
    merge_row(RESULTS_JSON, with_update_counts(record), KEY_FIELDS,
              lambda r: (TASKS.index(r['task']), -r['critic_target_tau'],
                         list(SWEEPS).index(r['sweep']), r['condition'], r['seed']))


def _pct(x: float | None) -> str:
    return 'n/a' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{100 * x:.0f} %'


def _steps(rs: list[dict[str, Any]]) -> str:
    vals = [r['steps_to_90'] for r in rs]
    if not vals:
        return 'n/a'
    reached = [v for v in vals if v is not None]
    txt = f'{statistics.mean(reached) / 1000:.1f}k' if reached else 'never'
    return txt + (f' ({len(reached)}/{len(vals)} seeds)' if len(reached) < len(vals) else '')


def gate_label(r: dict[str, Any]) -> str:
    """How a self-aligned row's updates were gated ('' for a fixed row): 'CV4 p0.05' for the
    4-fold cross-validated gate with the sign test, 'split' for one held-out split with better
    agreement alone (rows before those settings were recorded used that one)."""
    if r['condition'] != 'selfalign':
        return ''
    s = r.get('settings', {})
    folds, p = s.get('gate_folds', 1), s.get('update_gate_p', 1.0)
    return (('split' if folds == 1 else f'CV{folds}') + (f' p{p:g}' if p < 1 else '')
            + (', start-relative' if s.get('relative_to_start') else ''))


def report(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown tables, printed and returned: for each learner (critic_target_tau, largest
    first), per cell, then the summary per task and sweep."""
    taus = sorted({r['critic_target_tau'] for r in rows}, reverse=True)
    out: list[str] = []
    for tau in taus:
        if len(taus) > 1:
            out += [f'## Learner with critic_target_tau {tau:g}', '']
        out += _report_one([r for r in rows if r['critic_target_tau'] == tau]) + ['']
    print('\n'.join(out))
    return out[:-1]


def _report_one(rows: list[dict[str, Any]]) -> list[str]:
    out = ['### Per run (DrQ-v2 state obs, scripted teacher at mistake rate 0.1)', '',
           '| task | sweep | condition | seed | steps to 90 % | best / final success | '
           'θ key: initial -> final | applied / tried updates | max drop after update | '
           'LLM calls / tokens | learner update every | update gate | commit |',
           '|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|']
    for r in rows:
        k = KEY_PARAM[r['task']]
        out.append(
            f'| {r["task"]} | {r["sweep"]} | {r["condition"]} | {r["seed"]} | '
            f'{r["steps_to_90"] if r["steps_to_90"] is not None else "never"} / '
            f'{r["budget_steps"] // 1000}k | {_pct(r["best_success"])} / '
            f'{_pct(r["final_success"])} | {k} {r["initial_theta"].get(k, math.nan):.3g} -> '
            f'{r["final_theta"].get(k, math.nan):.3g} | {r["updates"]} / {r["updates_tried"]} | '
            f'{_pct(r["max_drop_after_update"])} | {r["llm_calls"]} / {r["llm_tokens"]} | '
            f'{r.get("settings", {}).get("update_every_steps", 2)} | {gate_label(r)} | '
            f'{r["commit"]} |')
    out += ['', '### Summary (mean over the seeds both conditions have run)', '',
            '| task | sweep | seeds | fixed: steps to 90 % | self-align: steps to 90 % | '
            'fixed: final success | self-align: final success | worst drop after an update |',
            '|---|---|---|---:|---:|---:|---:|---:|']
    for task in TASKS:
        for sweep in SWEEPS:
            cell = {c: {r['seed']: r for r in rows
                        if (r['task'], r['sweep'], r['condition']) == (task, sweep, c)}
                    for c in ('fixed', 'selfalign')}
            # paired seeds only, so that a seed one condition lacks does not move its mean;
            # a condition alone (the other not run yet) is shown over its own seeds
            both = sorted(set(cell['fixed']) & set(cell['selfalign']))
            seeds = both or sorted(set(cell['fixed']) | set(cell['selfalign']))
            fx = [cell['fixed'][k] for k in seeds if k in cell['fixed']]
            sa = [cell['selfalign'][k] for k in seeds if k in cell['selfalign']]
            if not fx and not sa:
                continue
            drops = [r['max_drop_after_update'] for r in sa
                     if r['max_drop_after_update'] is not None]

            def final(rs: list[dict[str, Any]]) -> str:
                return _pct(statistics.mean(r['final_success'] for r in rs)) if rs else 'n/a'
            out.append(f'| {task} | {sweep} | {", ".join(map(str, seeds))} | {_steps(fx)} | '
                       f'{_steps(sa)} | {final(fx)} | '
                       f'{final(sa)} | {_pct(max(drops)) if drops else "n/a"} |')
    return out


def plot(rows: list[dict[str, Any]]) -> None:
    """One figure per task: its 'paper' rows, a line per condition and learner
    (critic_target_tau)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    for task in TASKS:
        cells = [r for r in rows if r['task'] == task and r['sweep'] == 'paper']
        if not cells:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        taus = sorted({r['critic_target_tau'] for r in cells}, reverse=True)
        for cond, color in zip(CONDITIONS, ('tab:red', 'tab:blue')):
            for tau, style in zip(taus, ('-', '--', ':')):
                curves = [dict((int(s), v) for s, v in r['curve']) for r in cells
                          if r['condition'] == cond and r['critic_target_tau'] == tau
                          and r['curve']]
                if not curves:
                    continue
                steps = sorted({s for c in curves for s in c})
                # A seed that stopped early keeps its last value.
                grid = np.array([[c.get(s, c[max(k for k in c if k <= s)])
                                  if any(k <= s for k in c) else 0.0 for s in steps]
                                 for c in curves]) * 100
                label = f'{cond} ({len(curves)} seeds)' + (
                    f', critic tau {tau:g}' if len(taus) > 1 else '')
                ax.plot(steps, grid.mean(0), color=color, ls=style, label=label)
                ax.fill_between(steps, grid.min(0), grid.max(0), color=color, alpha=0.12)
        ax.axhline(90, ls='--', c='grey', lw=1)
        ax.set(xlabel='env steps', ylabel='eval success % (10 episodes)', ylim=(-3, 103),
               title=f'{task}: fixed initial reward vs self-alignment (mean, range)')
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f'paper_{task}.png', dpi=100)
        plt.close(fig)


def _theta_arg(text: str) -> dict[str, float]:
    try:
        theta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f'not JSON ({exc}); e.g. \'{{"w_push": 20}}\'') from None
    if not isinstance(theta, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in theta.values()):
        raise argparse.ArgumentTypeError('must be a JSON object of parameter name -> number, '
                                         'e.g. \'{"w_push": 20}\'')
    return {str(k): float(v) for k, v in theta.items()}


def main() -> None:
    global RESULTS_JSON  # --results: a trial file instead of the table
    from selfalign_reward.outer_loop import OuterLoopConfig  # the product's gate defaults

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tasks', default=','.join(TASKS))
    ap.add_argument('--seeds', type=int, default=3, help='seeds 0..N-1')
    ap.add_argument('--seed-start', type=int, default=0)
    ap.add_argument('--conditions', default=','.join(CONDITIONS))
    ap.add_argument('--sweeps', default='paper', help=f'comma list of {list(SWEEPS)}')
    ap.add_argument('--steps', type=int, default=0,
                    help=f'env steps per run (0: the issue-11 budget per task {BUDGETS})')
    ap.add_argument('--jobs', type=int, default=2, help='runs at once (2 on a 2-core machine)')
    ap.add_argument('--update-every', type=int, default=2000,
                    help='reward_update_every_steps of the self-alignment runs')
    ap.add_argument('--num-ranked', type=int, default=8)
    ap.add_argument('--update-gate-p', type=float, default=OuterLoopConfig.update_gate_p,
                    help='sign-test level an ordinary re-fit must reach on the held-out pairs '
                    '(OuterLoopConfig.update_gate_p; 1: better agreement alone)')
    ap.add_argument('--gate-folds', type=int, default=OuterLoopConfig.gate_folds,
                    help='1: one fixed held-out split; K >= 2: K-fold cross-validated gate '
                    '(OuterLoopConfig.gate_folds)')
    ap.add_argument('--mh-samples', type=int, default=2000)
    ap.add_argument('--mistake-rate', type=float, default=0.1)
    ap.add_argument('--eval-every', type=int, default=1000)
    ap.add_argument('--eval-episodes', type=int, default=10)
    ap.add_argument('--stop-after', type=int, default=2,
                    help='stop a run after this many consecutive 100 %% evals (0: never)')
    ap.add_argument('--learner-update-every', type=int, default=1,
                    help='env steps per DrQ-v2 update (1: docs/tasks.md, push 90 %% at 45k '
                    'instead of > 60k with 2)')
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--lr', type=float, default=3e-4)
    ap.add_argument('--std-steps', type=int, default=30_000)
    ap.add_argument('--critic-tau', type=float, default=None,
                    help="critic_target_tau of the learner (default: the task's "
                    'config/<task>.yaml, as the product trains it; rows are keyed by it)')
    ap.add_argument('--relative-to-start', action='store_true',
                    help="fit the rankings on returns relative to each episode's start "
                    '(OuterLoopConfig.relative_to_start)')
    ap.add_argument('--initial-theta', type=_theta_arg, default={},
                    help="JSON object of θ values set over the sweep's initial θ, e.g. "
                    '\'{"goal_sharpness": 1.1}\' (a trial: give it its own --results file; '
                    'rows are not keyed by it)')
    ap.add_argument('--results', type=Path, default=RESULTS_JSON,
                    help='rows go to this JSON file, its report beside it (.md; a trial file '
                    'instead of the table; plots only for the table)')
    ap.add_argument('--run-root', default='', help='also write a RunDir per run here')
    ap.add_argument('--skip-done', action='store_true',
                    help='skip cells already in the results file (--results)')
    ap.add_argument('--quiet', action='store_true', help='no per-evaluation lines')
    ap.add_argument('--report-only', action='store_true')
    args = ap.parse_args()
    RESULTS_JSON = args.results.resolve()
    tasks = [t for t in args.tasks.split(',') if t]
    sweeps = [s for s in args.sweeps.split(',') if s]
    conds = [c for c in args.conditions.split(',') if c]
    for what, given, valid in (('--tasks', tasks, TASKS), ('--sweeps', sweeps, tuple(SWEEPS)),
                               ('--conditions', conds, CONDITIONS)):
        bad = [x for x in given if x not in valid]
        if bad:
            sys.exit(f'{what}: unknown {bad}; choose from {list(valid)}')
    if not args.report_only:
        overrides = {'reward_update_every_steps': args.update_every,
                     'num_ranked': args.num_ranked, 'update_gate_p': args.update_gate_p,
                     'gate_folds': args.gate_folds,
                     'relative_to_start': args.relative_to_start,
                     'mh_samples': args.mh_samples,
                     'teacher_mistake_rate': args.mistake_rate,
                     'eval_every_steps': args.eval_every, 'eval_episodes': args.eval_episodes,
                     'stop_after_success': args.stop_after, 'hidden_dim': args.hidden,
                     'update_every_steps': args.learner_update_every,
                     'lr': args.lr, 'stddev_steps': args.std_steps, 'run_root': args.run_root,
                     'num_threads': 1, 'verbose': not args.quiet}
        if args.initial_theta:
            if RESULTS_JSON == TABLE_JSON:
                sys.exit('--initial-theta: a trial, not a table cell; give it its own --results')
            overrides['initial_theta'] = args.initial_theta
        tau = {t: default_critic_tau(t) if args.critic_tau is None else args.critic_tau
               for t in tasks}
        seeds = range(args.seed_start, args.seed_start + args.seeds)
        # seed-major order: every task's first seed finishes before any task's second
        jobs = [(t, s, c, w, args.steps or BUDGETS[t],
                 {**overrides, 'critic_target_tau': tau[t]})
                for s in seeds for t in tasks for w in sweeps for c in conds
                if w not in SETUPS or t in SETUPS[w]]
        if args.skip_done:  # the same cell with the same learner
            done = {_key(r) for r in load()}
            jobs = [j for j in jobs if (j[0], j[2], j[3], j[1], tau[j[0]]) not in done]
        print(f'{len(jobs)} runs, {args.jobs} at a time', flush=True)
        t0 = time.perf_counter()
        with mp.get_context('spawn').Pool(max(1, args.jobs), maxtasksperchild=1) as pool:
            for rec in pool.imap_unordered(_job, jobs):
                save(rec)
                print(f'done {rec["task"]} {rec["sweep"]} {rec["condition"]} seed {rec["seed"]}:'
                      f' steps to 90 % {rec["steps_to_90"]}, final {_pct(rec["final_success"])}'
                      f', {rec["wall_s"]:.0f} s', flush=True)
        print(f'all runs done in {time.perf_counter() - t0:.0f} s', flush=True)
    rows = load()
    if rows:
        lines = report(rows)
        RESULTS_JSON.with_suffix('.md').write_text('\n'.join(lines) + '\n')
        if RESULTS_JSON == TABLE_JSON:
            plot(rows)


if __name__ == '__main__':
    main()
