"""Benchmark of the ROS lockstep route: env steps/s through the bridge process vs in-process gym.

Run after ``source scripts/env.sh``: ``python benchmarks/bridge_speed.py [--steps N]``.

ROS lockstep: the ``pybullet_bridge`` executable runs as its own process (lockstep, no camera);
this process is the client a policy node would be: per step it sends the gripper command (when
it changed) and the twist, waits until /joint_states, /ee_pose, /ee_wrench and /object_pose of the
new stamp have all arrived, and builds the state observation with ``ObservationBuilder``.
Random actions, a reset (ResetEpisode service) every 100 steps, both included in the time.
In-process: ``benchmarks/env_speed.measure`` (the gym env, same actions and resets).
Both are measured in this one run and printed with their ratio (target: ROS >= 60 %).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import time

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / 'benchmarks'), str(_ROOT / 'tests')]

from env_speed import measure  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosproc import NodeProcess  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from selfalign_core import contract as C  # noqa: E402
from selfalign_core import contract_msgs as M  # noqa: E402
from selfalign_core.contract import action_to_command  # noqa: E402
from selfalign_core.observation import ObservationBuilder  # noqa: E402
from selfalign_interfaces.srv import ResetEpisode  # noqa: E402

EPISODE_STEPS = 100


class LockstepClient:
    """A minimal policy-side client: command -> wait for the full state of the next stamp."""

    def __init__(self, executor_kind: str = 'single') -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('bridge_speed_client', context=self.context)
        if executor_kind == 'events':
            from rclpy.experimental import EventsExecutor
            self.executor = EventsExecutor(context=self.context)
        else:
            self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

        self.latest: dict[str, object] = {}
        self.stamps: dict[str, int] = {}
        self._subs = []
        for name, typ in ((C.JOINT_STATES, JointState), (C.EE_POSE, PoseStamped),
                          (C.EE_WRENCH, WrenchStamped), (C.OBJECT_POSE, PoseStamped)):
            cb = self._make_cb(name)
            self._subs.append((self.node.create_subscription(typ, name, cb, qos), cb))
        # 'waitset': one rcl wait set over the 4 state subscriptions, every ready message taken
        # per wake-up (no executor bookkeeping per message).
        self._waitset = (_rclpy.WaitSet(len(self._subs), 0, 0, 0, 0, 0, self.context.handle)
                         if executor_kind == 'waitset' else None)
        self.twist_pub = self.node.create_publisher(TwistStamped, C.TWIST_CMD, qos)
        self.grip_pub = self.node.create_publisher(Float64MultiArray, C.GRIPPER_CMD, qos)
        self.reset_client = self.node.create_client(ResetEpisode, C.RESET_EPISODE)
        self.builder = ObservationBuilder()
        self._width: float | None = None

    def _make_cb(self, name: str):
        def cb(msg) -> None:
            self.latest[name] = msg
            self.stamps[name] = M.stamp_ns(msg.header.stamp)
        return cb

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (self.twist_pub.get_subscription_count() < 1
               or self.grip_pub.get_subscription_count() < 1
               or not self.reset_client.service_is_ready()
               or any(self.node.count_publishers(t) < 1 for t in
                      (C.JOINT_STATES, C.EE_POSE, C.EE_WRENCH,
                       C.OBJECT_POSE))):
            if time.monotonic() > deadline:
                raise TimeoutError('bridge not ready (topics/service) after '
                                   f'{timeout_s} s')
            self.executor.spin_once(timeout_sec=0.05)

    def _wait_state(self, stamp_ns: int | None, timeout_s: float = 10.0) -> None:
        """Spin until every state topic carries a stamp > ``stamp_ns`` (or any, if None)."""
        deadline = time.monotonic() + timeout_s
        need = 4
        while True:
            fresh = sum(1 for s in self.stamps.values() if stamp_ns is None or s > stamp_ns)
            if fresh == need and len(self.stamps) == need:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f'no full state after stamp {stamp_ns} in {timeout_s} s '
                                   f'(have {self.stamps})')
            if self._waitset is None:
                self.executor.spin_once(timeout_sec=0.1)
            else:
                self._wait_and_take(100_000_000)

    def _wait_and_take(self, timeout_ns: int) -> None:
        ws = self._waitset
        ws.clear_entities()
        for sub, _ in self._subs:
            ws.add_subscription(sub.handle)
        ws.wait(timeout_ns)
        for sub, cb in self._subs:
            while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
                cb(taken[0])

    def _snapshot(self):
        return M.snapshot_from_msgs(self.latest[C.JOINT_STATES], self.latest[C.EE_POSE],
                                         self.latest[C.OBJECT_POSE], self.latest[C.EE_WRENCH])

    def reset(self, seed: int) -> np.ndarray:
        fut = self.reset_client.call_async(ResetEpisode.Request(seed=seed))
        self.executor.spin_until_future_complete(fut, timeout_sec=10.0)
        rep = fut.result()
        if rep is None or not rep.success:
            raise RuntimeError(f'reset failed: {rep}')
        goal = M.pose_arrays(rep.goal_pose)[0]
        stamp = M.stamp_ns(rep.ee_pose.header.stamp)
        self._wait_state(stamp - 1)  # the reset state also arrives on the topics
        self._stamp = stamp
        return self.builder.reset(self._snapshot(), goal, rep.block_rest_z).observation

    def step(self, action: np.ndarray) -> np.ndarray:
        v, w = action_to_command(action)
        if w != self._width:
            self.grip_pub.publish(M.gripper_msg(w))
            self._width = w
        self.twist_pub.publish(M.twist_msg(v, 0))
        self._wait_state(self._stamp)
        self._stamp = self.stamps[C.JOINT_STATES]
        return self.builder.step(self._snapshot(), action).observation

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def measure_ros_lockstep(steps: int, seed: int = 0, executor_kind: str = 'single'
                         ) -> tuple[float, float]:
    """(env steps per wall-clock second, steps per CPU-second of bridge + client) through the
    bridge process in lockstep (resets every 100 steps included)."""
    params = {'mode': 'lockstep', 'publish_camera': False}
    with NodeProcess('selfalign_bringup', 'pybullet_bridge', params=params) as proc:
        client = LockstepClient(executor_kind)
        try:
            client.wait_ready()
            rng = np.random.default_rng(seed)
            actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
            client.reset(seed)
            for k in range(5):  # warm-up (first messages, allocations)
                client.step(actions[k])
            client.reset(seed)
            cpu0 = _process_cpu_s(proc.pid) + time.process_time()
            t0 = time.perf_counter()
            ep = 1
            for k in range(steps):
                client.step(actions[k])
                if (k + 1) % EPISODE_STEPS == 0:
                    client.reset(seed + ep)
                    ep += 1
            wall = time.perf_counter() - t0
            cpu = _process_cpu_s(proc.pid) + time.process_time() - cpu0
            return steps / wall, steps / cpu
        except Exception:
            print(proc.output(), file=sys.stderr)
            raise
        finally:
            client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=500, help='env steps per measurement')
    ap.add_argument('--rounds', type=int, default=3,
                    help='interleaved rounds (the CPU is shared: medians over rounds)')
    ap.add_argument('--task', default='touch', help='task scene for the in-process env')
    args = ap.parse_args()
    routes: dict[str, list[tuple[float, float]]] = {'inproc': [], 'single': [], 'waitset': []}
    for r in range(args.rounds):
        routes['inproc'].append(measure(args.task, 'state', args.steps, seed=r))
        routes['single'].append(measure_ros_lockstep(args.steps, r, 'single'))
        routes['waitset'].append(measure_ros_lockstep(args.steps, r, 'waitset'))
    wall = {k: float(np.median([x[0] for x in v])) for k, v in routes.items()}
    cpu = {k: float(np.median([x[1] for x in v])) for k, v in routes.items()}
    print(f'## Env steps/s, state observations ({args.task}), {args.steps} steps x '
          f'{args.rounds} interleaved rounds (median), random actions, a reset every '
          f'{EPISODE_STEPS} steps included; {os.cpu_count()} CPUs shared, load average '
          f'{os.getloadavg()[0]:.1f}\n')
    print('| route | steps/s (wall) | vs in-process | CPU ms/step (all processes) | '
          'vs in-process (CPU) | wall steps/s per round |')
    print('|---|---:|---:|---:|---:|---|')
    names = {'inproc': 'in-process gym env (`env_speed.measure`)',
             'single': 'ROS lockstep, client on SingleThreadedExecutor.spin_once',
             'waitset': 'ROS lockstep, client on one rcl wait set (take all ready)'}
    for key, label in names.items():
        rounds = ', '.join(f'{x[0]:.0f}' for x in routes[key])
        print(f'| {label} | {wall[key]:.0f} | {wall[key] / wall["inproc"]:.0%} | '
              f'{1000 / cpu[key]:.2f} | {cpu[key] / cpu["inproc"]:.0%} | {rounds} |')
    best = max(wall['single'], wall['waitset'])
    print(f'\nBest ROS client, wall: {best / wall["inproc"]:.0%} of in-process; target >= 60 %: '
          f'{"met" if best / wall["inproc"] >= 0.6 else "NOT met"}. ROS adds '
          f'{1000 / max(cpu["single"], cpu["waitset"]) - 1000 / cpu["inproc"]:.2f} ms CPU per '
          'step (bridge + client, both processes).')


if __name__ == '__main__':
    main()
