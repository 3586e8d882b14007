"""Where an env step's time goes: the bare trainer vs the embedded ROS run, per piece of code.

Wraps the methods an env step runs through (the learner's update and act, the replay, the
simulator's step, the robot-contract env's halves and the bridge's step) with wall and
thread-CPU counters, runs each route for ``--steps`` env steps (touch, oracle reward for the
bare trainer; the whole embedded loop with the scripted teacher), and prints ms per env step
for each piece, side by side. ``--pinned`` adds the embedded route confined to one CPU
(taskset), whose threads then hand the GIL over on one core (docs/performance.md);
``--no-link`` adds the embedded route whose policy steps its bridge over DDS, as before the
in-process link (``selfalign train --no-link``).

    python benchmarks/step_costs.py [--steps 2000] [--pinned] [--no-link]

Each route runs in a fresh process. Wall time of a piece includes waiting for the GIL; its CPU
is the calling thread's only.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: (module, class, method) timed; the name shown is Class.method.
PIECES = (
    ('selfalign_policy.trainer', 'Trainer', '_play'),
    ('selfalign_policy.trainer', 'Trainer', '_run_updates'),
    ('selfalign_policy.agent', 'DrQV2Agent', 'update'),
    ('selfalign_policy.agent', 'DrQV2Agent', 'act_batch'),
    ('selfalign_policy.replay', 'ReplayBuffer', 'sample'),
    ('selfalign_policy.replay', 'ReplayBuffer', 'add'),
    ('selfalign_bringup.sim.envs', 'SelfAlignEnv', 'step'),
    ('selfalign_bringup.sim.world', 'PandaWorld', 'step'),
    ('selfalign_policy.robot_env', 'RobotContractEnv', 'step_async'),
    ('selfalign_policy.robot_env', 'RobotContractEnv', 'step_wait'),
    ('selfalign_policy.robot_env', 'RobotContractEnv', '_wait_state'),
    ('selfalign_core.observation', 'ObservationBuilder', 'step'),
    ('selfalign_bringup.bridge_core', 'BridgeCore', '_step'),
)

LEARNER = {'hidden_dim': 256, 'num_expl_steps': 200, 'update_every_steps': 2}


def _instrument() -> dict[str, list[float]]:
    acc: dict[str, list[float]] = {}

    def wrap(mod: str, cls: str, meth: str) -> None:
        owner = getattr(importlib.import_module(mod), cls)
        f = getattr(owner, meth)
        key = f'{cls}.{meth}'

        @functools.wraps(f)
        def timed(*a: Any, **k: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return f(*a, **k)
            finally:
                s = acc.setdefault(key, [0, 0.0, 0.0])
                s[0] += 1
                s[1] += time.perf_counter() - t
                s[2] += time.thread_time() - c

        setattr(owner, meth, timed)

    for piece in PIECES:
        wrap(*piece)
    return acc


def child(route: str, steps: int, out: str) -> None:
    """One route in this process; writes {piece: [calls, wall s, cpu s], '_steps': n}."""
    acc = _instrument()
    if route == 'bare':
        import torch

        torch.set_num_threads(1)
        import gymnasium as gym

        import selfalign_bringup.sim  # noqa: F401  (registers the envs)
        from selfalign_core import features, tasks
        from selfalign_policy.config import DrQV2Config
        from selfalign_policy.trainer import Trainer

        cfg = DrQV2Config.from_dict({'agent': LEARNER, 'trainer': {
            'total_env_steps': steps, 'seed': 0, 'eval_every_steps': steps * 10,
            'progress': False}})
        tr = Trainer(gym.make('SelfAlign/Touch-v0'), cfg,
                     lambda x: tasks.oracle_reward('touch', features.unpack(x)), task='touch')
        tr.train()
    else:
        from selfalign_bringup import cli

        run = Path(tempfile.mkdtemp(prefix='selfalign-costs-')) / 'run'
        cli.main(['train', '--task', 'touch', '--steps', str(steps), '--run-dir', str(run),
                  '--no-progress', *(['--no-link'] if route == 'embedded-no-link' else []),
                  '--set', f'alignment_node.reward_update_every_steps={max(steps // 2, 400)}',
                  '--set', 'alignment_node.num_ranked=4',
                  '--set', f'policy_node.eval_every_steps={steps * 10}',
                  '--set', f'policy_node.num_expl_steps={LEARNER["num_expl_steps"]}',
                  '--set', f'policy_node.update_every_steps={LEARNER["update_every_steps"]}'])
    n = acc.get('ReplayBuffer.add', [0])[0]
    Path(out).write_text(json.dumps({**acc, '_steps': n}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=2000)
    ap.add_argument('--pinned', action='store_true')
    ap.add_argument('--no-link', action='store_true')
    ap.add_argument('--child', nargs=2, metavar=('ROUTE', 'OUT'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.steps, a.child[1])
        return
    cpu = min(os.sched_getaffinity(0))
    routes = [('bare trainer', 'bare', ()), ('embedded', 'embedded', ())]
    if a.no_link:
        routes.append(('embedded, --no-link', 'embedded-no-link', ()))
    if a.pinned:
        routes.append((f'embedded, taskset -c {cpu}', 'embedded', ('taskset', '-c', str(cpu))))
    results = {}
    for name, route, prefix in routes:
        with tempfile.NamedTemporaryFile(suffix='.json') as f:
            subprocess.run([*prefix, sys.executable, __file__, '--steps', str(a.steps),
                            '--child', route, f.name], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=ROOT)
            results[name] = json.loads(Path(f.name).read_text())
    print(f'\ntouch, {a.steps} env steps, hidden 256, update every 2 steps; ms per env step '
          '(wall / CPU of the calling thread); load average '
          f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n')
    print('| piece | ' + ' | '.join(results) + ' |')
    print('|---|' + '---:|' * len(results))
    for _, cls, meth in PIECES:
        key = f'{cls}.{meth}'
        cells = []
        for r in results.values():
            if key in r:
                _, wall, cpu_s = r[key]
                cells.append(f'{wall / r["_steps"] * 1e3:.2f} / {cpu_s / r["_steps"] * 1e3:.2f}')
            else:
                cells.append('')
        print(f'| {key} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
