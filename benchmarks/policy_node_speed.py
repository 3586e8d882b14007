"""policy_node over ROS vs the bare trainer: env steps/s and CPU seconds per env step.

Three rows per network size, all on the touch task with the oracle reward (no LLM, no reward
node), lockstep, measured in one run:

- **bare trainer**: ``Trainer`` on the in-process gym env (PyBullet in the same process).
- **policy_node, selfalign executor**: the installed ``policy_node`` executable (our
  ``selfalign_core.executors.MultiThreadedExecutor``) against the ``pybullet_bridge`` process.
- **policy_node, rclpy executor**: the same node class spun by rclpy's own
  ``MultiThreadedExecutor`` (what every node ran before): the "before" figure.

Timing starts when the first training episode ends (start-up, imports and DDS discovery
excluded) and stops at the node's ``done``; CPU is read from ``/proc/<pid>/stat`` of the policy
and of the bridge at the same two moments. The bare row's CPU includes the simulator, so compare
it with policy + bridge. Last, the bridge is killed mid-episode and a new one started: the time
from the new bridge's first state (and from its 'ready' log line, which adds DDS discovery) to
the policy's next command is how fast training resumes.

    python benchmarks/policy_node_speed.py [--steps 600] [--rclpy-steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import threading
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import conftest  # noqa: E402,F401  (own ROS_DOMAIN_ID, discovery on localhost)
from tests.rosproc import NodeProcess, TestNode  # noqa: E402

sys.path.insert(0, str(ROOT / 'benchmarks'))
from run_speed import bare_trainer  # noqa: E402

TICK = os.sysconf('SC_CLK_TCK')
SIZES = {'hidden 32, batch 16': {'hidden_dim': 32, 'batch_size': 16},
         'hidden 256, batch 256': {'hidden_dim': 256, 'batch_size': 256}}
# The node class under rclpy's own executor, as every node's main() ran it before.
RCLPY_RUNNER = """
import sys, rclpy
from rclpy.executors import MultiThreadedExecutor
from selfalign_policy.policy_node import PolicyNode
rclpy.init(args=sys.argv)
node = PolicyNode()
executor = MultiThreadedExecutor(num_threads=2)
executor.add_node(node)
try:
    executor.spin()
except KeyboardInterrupt:
    pass
finally:
    node.close(); node.destroy_node(); rclpy.try_shutdown()
"""


def cpu_s(pid: int) -> float:
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def bare(size: dict[str, int], steps: int) -> dict[str, float]:
    r = bare_trainer('touch', steps, agent={**size, 'num_expl_steps': 100})
    return {'steps_per_s': r['steps_per_s'], 'cpu_ms_policy': r['cpu_s_per_10k'] / 10,
            'cpu_ms_bridge': 0.0}


def over_ros(size: dict[str, int], steps: int, rclpy_executor: bool) -> dict[str, float]:
    from std_msgs.msg import String

    params = {'task': 'touch', 'reward_source': 'oracle', 'total_env_steps': steps,
              'num_expl_steps': 100, 'eval_every_steps': 0, 'checkpoint_every_steps': 0,
              'stats_every_updates': 10**6, **size}
    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge', params={'mode': 'lockstep'})
    policy = NodeProcess('selfalign_policy', 'policy_node', params=params)
    if rclpy_executor:
        policy.cmd = [sys.executable, '-c', RCLPY_RUNNER, *policy.cmd[1:]]
    marks: dict[str, tuple[float, float, float, int]] = {}
    lock = threading.Lock()

    def on_stats(msg: String) -> None:
        d = json.loads(msg.data)
        kind = d.get('kind')
        if (kind == 'episode' and 'first' not in marks) or kind == 'done':
            mark = (time.monotonic(), cpu_s(policy.pid), cpu_s(bridge.pid), int(d['env_step']))
            with lock:
                marks.setdefault('first' if kind == 'episode' else 'done', mark)

    with TestNode('policy_speed_probe') as probe:
        probe.node.create_subscription(String, '/selfalign/policy_stats', on_stats, 100)
        with bridge, policy:
            budget = 60 + steps * (2.0 if rclpy_executor else 0.5)
            try:
                probe.wait_until(lambda: 'done' in marks, budget, 'training done')
            except TimeoutError:
                raise RuntimeError(f'policy_node did not finish {steps} steps in {budget} s:\n'
                                   + policy.output()[-3000:]) from None
    (t0, p0, b0, s0), (t1, p1, b1, s1) = marks['first'], marks['done']
    n = s1 - s0
    return {'steps_per_s': n / (t1 - t0), 'cpu_ms_policy': 1e3 * (p1 - p0) / n,
            'cpu_ms_bridge': 1e3 * (b1 - b0) / n}


def restart_latency(steps: int = 600) -> tuple[float, float]:
    """Kill the bridge mid-episode, start a new one: seconds to the policy's next command from
    the new bridge's 'ready' (DDS discovery included) and from its first state."""
    from geometry_msgs.msg import TwistStamped

    params = {'task': 'touch', 'reward_source': 'oracle', 'total_env_steps': steps,
              'num_expl_steps': 100, 'eval_every_steps': 0, 'checkpoint_every_steps': 0,
              'state_timeout_s': 0.5, **SIZES['hidden 32, batch 16']}
    twists: list[int] = [0]  # command stamps: the policy's clock, wall time ns
    with TestNode('restart_probe') as probe, \
            NodeProcess('selfalign_policy', 'policy_node', params=params) as policy:
        probe.node.create_subscription(
            TwistStamped, '/servo_node/delta_twist_cmds',
            lambda m: twists.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec), 10)
        with NodeProcess('selfalign_bringup', 'pybullet_bridge', params={'mode': 'lockstep'}):
            probe.wait_until(lambda: len(twists) > 150, 90, '150 commands')
        debug = ['--ros-args', '--log-level', 'pybullet_bridge:=debug']
        with NodeProcess('selfalign_bringup', 'pybullet_bridge', params={'mode': 'lockstep'},
                         extra_args=debug) as bridge:
            try:
                ready = int(bridge.log_time('pybullet_bridge ready', 60) * 1e9)
                first = int(bridge.log_time('first state of episode', 60) * 1e9)
                probe.wait_until(lambda: twists[-1] > first, 60, 'a command to the new bridge')
            except TimeoutError:
                raise RuntimeError(policy.output()[-3000:]) from None
        resumed = next(t for t in twists if t > first)
        return (resumed - ready) * 1e-9, (resumed - first) * 1e-9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=600, help='env steps per run')
    ap.add_argument('--rclpy-steps', type=int, default=300,
                    help="env steps with rclpy's executor (slow; 0 = skip that row)")
    ns = ap.parse_args()
    print('| network | route | env steps/s | CPU ms/step policy | CPU ms/step bridge | '
          'CPU ms/step total | × bare CPU |')
    print('|---|---|---:|---:|---:|---:|---:|')
    for label, size in SIZES.items():
        rows = [('bare trainer (gym env)', bare(size, ns.steps)),
                ('policy_node, selfalign executor', over_ros(size, ns.steps, False))]
        if ns.rclpy_steps:
            rows.append(("policy_node, rclpy's executor (before)",
                         over_ros(size, ns.rclpy_steps, True)))
        base = rows[0][1]['cpu_ms_policy']
        for route, r in rows:
            total = r['cpu_ms_policy'] + r['cpu_ms_bridge']
            print(f"| {label} | {route} | {r['steps_per_s']:.1f} | {r['cpu_ms_policy']:.2f} | "
                  f"{r['cpu_ms_bridge']:.2f} | {total:.2f} | {total / base:.2f} |", flush=True)
    print('\n| bridge killed mid-episode, a new one started | from its ready | from its first '
          'state |\n|---|---:|---:|')
    for i in range(3):
        from_ready, from_first = restart_latency()
        print(f'| restart {i + 1}: training resumed after | {from_ready:.3f} s | '
              f'{from_first:.3f} s |', flush=True)


if __name__ == '__main__':
    main()
