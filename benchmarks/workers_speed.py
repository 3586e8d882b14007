"""N workers: env steps/s and CPU per step of one policy_node stepping N bridge processes.

``policy_node workers:=N`` against N ``pybullet_bridge`` processes under ``arm_0 ... arm_{N-1}``
(lockstep, touch, oracle reward, the node's default learner: hidden 256, batch 256, one update
every 2 env steps), for N = 1, 2, 4. Two kinds of row: **with learner** (state observations,
updates on), and **collection only** (no updates: what N arms buy where the learner is not on the
same cores, e.g. on a GPU), state and pixels. Timing starts when the first round of episodes has
ended (start-up and DDS discovery excluded) and stops at the node's ``done``; CPU is read from
``/proc/<pid>/stat`` of the policy and of every bridge at the same two moments.

From the CPU per step the table states what a machine with more cores would reach: the policy
process is one learner thread (updates, one batched forward pass per round, the ROS callbacks),
the bridges run in parallel, so with C cores the rate is bounded by ``1000 / policy ms`` and by
``C * 1000 / total ms`` (the policy's figure measured at that N).

Then learning: touch with N = 2 vs N = 1 at the same update-to-data ratio (oracle reward,
10 evaluation episodes every ``--eval-every`` env steps): eval success against env steps and
against wall time.

    python benchmarks/workers_speed.py [--steps 2000] [--pixel-steps 1200] [--learn-steps 12000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import threading
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import conftest  # noqa: E402,F401  (own ROS_DOMAIN_ID, discovery on localhost)
from tests.rosproc import NodeProcess, TestNode  # noqa: E402

sys.path.insert(0, str(ROOT / 'benchmarks'))
from policy_node_speed import cpu_s  # noqa: E402

EPISODE = 100  # touch: control steps per episode
RESULTS = ROOT / 'benchmarks' / 'results' / 'workers_speed.json'


def run(workers: int, obs: str, steps: int, extra: dict | None = None,
        timeout_s: float | None = None, learner: bool = True) -> dict:
    """One policy_node with ``workers`` bridges; speed figures and the evaluations it
    published (each with its wall time since the first episode)."""
    from std_msgs.msg import String

    params = {'task': 'touch', 'reward_source': 'oracle', 'total_env_steps': steps,
              'num_expl_steps': 100, 'eval_every_steps': 0, 'checkpoint_every_steps': 0,
              'obs': obs, 'workers': workers, 'replay_capacity': 20_000,
              'stats_every_updates': 10**6,
              'update_every_steps': 2,  # the learner of the figures in docs/performance.md
              **({} if learner else {'num_expl_steps': 10**7}), **(extra or {})}
    bridge_params = {'mode': 'lockstep', 'publish_camera': obs == 'pixels'}
    bridges = [NodeProcess('selfalign_bringup', 'pybullet_bridge',
                           params={**bridge_params, 'seed': i, 'publish_clock': i == 0},
                           namespace=f'/arm_{i}' if workers > 1 else None)
               for i in range(workers)]
    policy = NodeProcess('selfalign_policy', 'policy_node', params=params)
    marks: dict[str, tuple] = {}
    evals: list[tuple[float, int, float]] = []
    lock = threading.Lock()

    def on_stats(msg: String) -> None:
        d = json.loads(msg.data)
        kind = d.get('kind')
        now = time.monotonic()
        first_round = kind == 'episode' and int(d['env_step']) >= workers * (EPISODE - 1) + 1
        if (first_round and 'first' not in marks) or kind == 'done':
            mark = (now, cpu_s(policy.pid), sum(cpu_s(b.pid) for b in bridges),
                    int(d['env_step']))
            with lock:
                marks.setdefault('done' if kind == 'done' else 'first', mark)
        elif kind == 'eval':
            with lock:
                evals.append((now, int(d['env_step']), float(d['success_rate'])))

    with TestNode('workers_speed_probe') as probe:
        probe.node.create_subscription(String, '/selfalign/policy_stats', on_stats, 100)
        for b in bridges:
            b.start()
        try:
            with policy:
                budget = timeout_s or 90 + steps * (0.5 if obs == 'state' else 2.0)
                try:
                    probe.wait_until(lambda: 'done' in marks, budget, 'training done')
                except TimeoutError:
                    raise RuntimeError(f'policy_node did not finish {steps} steps in {budget} s:'
                                       '\n' + policy.output()[-3000:]) from None
        finally:
            for b in bridges:
                b.stop()
    (t0, p0, b0, s0), (t1, p1, b1, s1) = marks['first'], marks['done']
    n = s1 - s0
    return {'workers': workers, 'obs': obs, 'learner': learner, 'steps_per_s': n / (t1 - t0),
            'cpu_ms_policy': 1e3 * (p1 - p0) / n, 'cpu_ms_bridges': 1e3 * (b1 - b0) / n,
            'evals': [(round(t - t0, 2), s, r) for t, s, r in evals]}


def speed_table(rows: list[dict], cores: int) -> None:
    print(f'| row | obs | workers | env steps/s | CPU ms/step policy | CPU ms/step bridges | '
          f'CPU ms/step total | × N=1 steps/s | bound on {cores} cores, steps/s |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    base = {}
    for r in rows:
        total = r['cpu_ms_policy'] + r['cpu_ms_bridges']
        kind = 'with learner' if r['learner'] else 'collection only'
        base.setdefault((kind, r['obs']), r['steps_per_s'])
        bound = min(1000 / r['cpu_ms_policy'], cores * 1000 / total)
        print(f"| {kind} | {r['obs']} | {r['workers']} | {r['steps_per_s']:.1f} | "
              f"{r['cpu_ms_policy']:.2f} | {r['cpu_ms_bridges']:.2f} | {total:.2f} | "
              f"{r['steps_per_s'] / base[(kind, r['obs'])]:.2f} | {bound:.0f} |", flush=True)


def learning_table(runs: dict[int, dict]) -> None:
    print('\n| workers | env steps | wall s since the first episode | eval success |')
    print('|---:|---:|---:|---:|')
    for n, r in runs.items():
        for t, s, rate in r['evals']:
            print(f'| {n} | {s} | {t:.0f} | {100 * rate:.0f} % |')
    for n, r in runs.items():
        hit = next(((t, s) for t, s, rate in r['evals'] if rate >= 0.9), None)
        what = f'{hit[1]} env steps, {hit[0]:.0f} s' if hit else 'not reached'
        print(f'\nN = {n}: 90 % first at {what} ({r["steps_per_s"]:.1f} env steps/s)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--workers', default='1,2,4')
    ap.add_argument('--steps', type=int, default=2000, help='state: env steps per run')
    ap.add_argument('--pixel-steps', type=int, default=1200,
                    help='pixels (collection only): env steps (0: skip)')
    ap.add_argument('--learn-steps', type=int, default=12000,
                    help='learning comparison budget (0: skip)')
    ap.add_argument('--eval-every', type=int, default=1500)
    ap.add_argument('--cores', type=int, default=16, help='machine size for the bound column')
    ns = ap.parse_args()
    counts = [int(n) for n in ns.workers.split(',')]
    rows = [run(n, 'state', ns.steps) for n in counts]
    rows += [run(n, 'state', ns.steps, learner=False) for n in counts]
    if ns.pixel_steps:
        rows += [run(n, 'pixels', ns.pixel_steps, learner=False) for n in counts]
    speed_table(rows, ns.cores)
    runs = {}
    if ns.learn_steps:
        learn = {'eval_every_steps': ns.eval_every, 'eval_episodes': 10,
                 'num_expl_steps': 2000}
        for n in (1, 2):
            runs[n] = run(n, 'state', ns.learn_steps, learn, timeout_s=60 + ns.learn_steps)
        learning_table(runs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    learning = {str(k): v for k, v in runs.items()} or old.get('learning', {})
    RESULTS.write_text(json.dumps({'speed': rows, 'learning': learning}, indent=1))
    print(f'\nwritten: {RESULTS.relative_to(ROOT)}')


if __name__ == '__main__':
    main()
