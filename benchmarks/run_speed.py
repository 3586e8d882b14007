"""Wall-clock per 10k env steps: embedded run (`selfalign train`) vs multi-process (`launch`).

Both routes run the whole loop (bridge, DrQ-v2 policy with updates, reward, alignment with the
scripted teacher, monitor) on the same configuration; a third row runs the bare trainer on the
gym env (no ROS) as the floor. Time and CPU are measured between the first and the last logged
episode, so start-up (imports, DDS discovery, the LLM proposal) is excluded and reported
separately (with start-up and shutdown, CPU is in its own column).

    python benchmarks/run_speed.py [--steps 2000] [--task touch] [--before REV] [--repeats N]
                                   [--pinned]

``--before REV`` measures the same three routes on commit REV too, in the same run: a git
worktree of REV is built (colcon, the same venv) in a temporary directory and every route runs
from it, so the table shows before and after side by side. ``--repeats N`` runs every route
N times, interleaved (before, after, before, ...), and reports each figure's median with its
range: on a shared machine one run of a route moves ±15 %.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get('SELFALIGN_VENV', ROOT / '.venv'))


def tree_env(tree: Path) -> dict[str, str]:
    """The environment ``source <tree>/scripts/env.sh`` gives, from one without any install."""
    drop = ('PYTHONPATH', 'AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'COLCON_PREFIX_PATH',
            'LD_LIBRARY_PATH', '_ROS_WHEELS_BOOTSTRAP_COMPLETE')
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    clean['PATH'] = ':'.join(p for p in clean['PATH'].split(':') if not p.startswith(str(ROOT)))
    clean['SELFALIGN_VENV'] = str(VENV)
    out = subprocess.run(['bash', '-c', f'source {tree}/scripts/env.sh >/dev/null && env -0'],
                         env=clean, check=True, capture_output=True).stdout
    return dict(item.split('=', 1) for item in out.decode().split('\0') if '=' in item)


def build_worktree(rev: str) -> Path:
    tree = Path(tempfile.mkdtemp(prefix='selfalign-before-')) / 'tree'
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '--detach', str(tree), rev],
                   check=True, capture_output=True)
    env = tree_env(tree)
    subprocess.run(['bash', str(tree / 'scripts' / 'setup.sh')], env=env, check=True,
                   capture_output=True)
    return tree


#: One learner update every this many env steps on every route (the bare AgentConfig default
#: and the figures in docs/performance.md; policy_node's own default is now 1).
UPDATE_EVERY = 2


def _episodes(run: Path) -> list[tuple[float, int]]:
    with open(run / 'metrics.csv', newline='') as fh:
        return [(float(r['time']), int(r['env_step'])) for r in csv.DictReader(fh)
                if r['kind'] == 'episode']


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and its live descendants."""
    tick = os.sysconf('SC_CLK_TCK')
    parent, cpu = {}, {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f'/proc/{entry}/stat').read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(')') + 2:].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(cpu.get(pid, 0.0) for pid in tree)


def ros_route(mode: str, task: str, steps: int, every: int, tree: Path = ROOT,
              prefix: tuple[str, ...] = ()) -> dict[str, float]:
    """One run of ``selfalign train|launch``. Its rate is taken between the first and the last
    logged episode, and so is its CPU per step (the CPU of the process tree, sampled from /proc
    when each episode row appears), as the bare trainer's is after its first episode; start-up
    and shutdown (final plots, checkpoint) are left out there and counted in ``cpu_all``."""
    run = Path(tempfile.mkdtemp(prefix=f'selfalign-{mode}-')) / 'run'
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.Popen(
        [*prefix, str(tree / 'bin' / 'selfalign'), mode, '--task', task, '--steps', str(steps),
         '--run-dir', str(run), '--no-progress',
         '--set', f'alignment_node.reward_update_every_steps={every}',
         '--set', 'alignment_node.num_ranked=4',
         '--set', f'policy_node.eval_every_steps={steps * 10}',
         '--set', 'policy_node.num_expl_steps=200',
         '--set', f'policy_node.update_every_steps={UPDATE_EVERY}'],
        env=tree_env(tree), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: list[tuple[int, float]] = []  # (env_step of the newest episode, tree CPU then)
    while proc.poll() is None:
        eps = _episodes(run) if (run / 'metrics.csv').is_file() else []
        if eps and (not seen or eps[-1][1] != seen[-1][0]):
            seen.append((eps[-1][1], tree_cpu_s(proc.pid)))
        time.sleep(0.1)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, mode)
    total = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    eps = _episodes(run)
    (ta, sa), (tb, sb) = eps[0], eps[-1]
    rate = (sb - sa) / (tb - ta)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    (s0, c0), (s1, c1) = seen[0], seen[-1]
    return {'steps_per_s': rate, 's_per_10k': 1e4 / rate, 'startup_s': total - (tb - ta),
            'cpu_s_per_10k': (c1 - c0) / (s1 - s0) * 1e4, 'cpu_all_s_per_10k': cpu / steps * 1e4}


def bare_trainer(task: str, steps: int, tree: Path = ROOT,
                 agent: dict[str, int] | None = None) -> dict[str, float]:
    """The bare Trainer on the gym env (oracle reward), timed after its first episode;
    ``agent`` overrides AgentConfig fields (default hidden 256, 200 exploration steps)."""
    agent = {'hidden_dim': 256, 'num_expl_steps': 200, 'update_every_steps': UPDATE_EVERY,
             **(agent or {})}
    code = f"""
import time, resource, torch
torch.set_num_threads(1)
import gymnasium as gym
import selfalign_bringup.sim  # registers the envs
from selfalign_policy.config import DrQV2Config
from selfalign_policy.trainer import Trainer
from selfalign_core import features, tasks
env = gym.make('SelfAlign/{''.join(p.title() for p in task.split('_'))}-v0')
cfg = DrQV2Config.from_dict({{'agent': {agent!r},
                              'trainer': {{'total_env_steps': {steps}, 'seed': 0,
                                          'eval_every_steps': {steps * 10},
                                          'progress': False}}}})
tr = Trainer(env, cfg, lambda x: tasks.oracle_reward('{task}', features.unpack(x)), task='{task}')
tr.run_episode()
t0, c0 = time.time(), time.process_time()
tr.train()
print(tr.env_step - 100, time.time() - t0, time.process_time() - c0)
"""
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True, env=tree_env(tree)).stdout.split()
    n, wall, cpu = int(out[-3]), float(out[-2]), float(out[-1])
    return {'steps_per_s': n / wall, 's_per_10k': 1e4 * wall / n, 'startup_s': float('nan'),
            'cpu_s_per_10k': 1e4 * cpu / n, 'cpu_all_s_per_10k': float('nan')}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--task', default='touch')
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--before', metavar='REV', help='also measure commit REV (worktree)')
    parser.add_argument('--repeats', type=int, default=1,
                        help='runs of every route, interleaved; the table shows medians')
    parser.add_argument('--pinned', action='store_true',
                        help='also run the embedded route confined to one CPU (taskset): its '
                             'threads then hand the GIL over on one core (docs/performance.md)')
    ns = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    pinned = f'embedded, pinned to one CPU (taskset -c {cpu})'
    every = max(ns.steps // 2, 400)
    trees = [('', ROOT)]
    if ns.before:
        trees.insert(0, (f'{ns.before} (before): ', build_worktree(ns.before)))
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(max(1, ns.repeats)):
        for label, tree in trees:
            runs.setdefault(f'{label}bare trainer on the gym env (no ROS)', []).append(
                bare_trainer(ns.task, ns.steps, tree))
            runs.setdefault(f'{label}embedded: selfalign train (one process)', []).append(
                ros_route('train', ns.task, ns.steps, every, tree))
            runs.setdefault(f'{label}multi-process: selfalign launch', []).append(
                ros_route('launch', ns.task, ns.steps, every, tree))
            if ns.pinned and not label:
                runs.setdefault(pinned, []).append(ros_route(
                    'train', ns.task, ns.steps, every, tree, ('taskset', '-c', str(cpu))))
    rows = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for name, rs in runs.items()}
    if ns.before:
        subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force',
                        str(trees[0][1])], check=False, capture_output=True)
    load = os.getloadavg()[0]
    reps = max(1, ns.repeats)
    print(f'\n{ns.task}, {ns.steps} env steps per route, state obs, hidden 256, update every 2 '
          f'steps, alignment every {every} steps; {reps} run(s) per route, interleaved'
          f'{" (medians; range in brackets)" if reps > 1 else ""}; load average {load:.1f} on '
          f'{os.cpu_count()} cores\n')
    print('| route | env steps/s | wall s per 10k steps | CPU s per 10k steps (all processes, '
          'after the first episode) | CPU s per 10k steps (start-up included) | start-up s |')
    print('|---|---:|---:|---:|---:|---:|')
    for name, r in rows.items():
        rates = [x['steps_per_s'] for x in runs[name]]
        spread = f' [{min(rates):.1f}–{max(rates):.1f}]' if reps > 1 else ''
        print(f'| {name} | {r["steps_per_s"]:.1f}{spread} | {r["s_per_10k"]:.0f} | '
              f'{r["cpu_s_per_10k"]:.0f} | {r["cpu_all_s_per_10k"]:.0f} | '
              f'{r["startup_s"]:.1f} |')
    for label, _ in trees:
        bare = rows[f'{label}bare trainer on the gym env (no ROS)']
        for route in ('embedded: selfalign train (one process)',
                      'multi-process: selfalign launch', pinned):
            if f'{label}{route}' not in rows:
                continue
            r = rows[f'{label}{route}']
            print(f'{label}{route}: {r["steps_per_s"] / bare["steps_per_s"]:.0%} of the bare '
                  f'trainer\'s env steps/s, {r["cpu_s_per_10k"] / bare["cpu_s_per_10k"]:.1f}x '
                  'its CPU per step')


if __name__ == '__main__':
    main()
