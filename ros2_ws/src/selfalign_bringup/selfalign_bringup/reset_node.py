"""reset_node: episode resets on a real arm, through the robot contract (serves reset_episode).

On hardware nobody teleports the arm: this node serves ``/selfalign/reset_episode`` (the service
the sim bridge serves in simulation), so ``policy_node`` can train or evaluate on the real arm
unchanged. Two modes:

* ``scripted`` — opens the gripper and drives the EE to ``home_m`` with twist commands (a
  proportional law capped at ``max_speed_mps``, the contract's command topics) until it is
  within ``tolerance_m`` (or ``timeout_s`` -> failure); then waits ``settle_s`` and replies.
* ``operator`` — opens the gripper and waits until an operator has put the scene back and calls
  ``~/confirm`` (std_srvs/Trigger) (or ``timeout_s`` -> failure).

The reply carries the latest contract state, the goal (``goal_m``, or the latest
``/selfalign/goal_pose`` if someone publishes one) and ``block_rest_z`` = the object's height at
reset (the block rests on the table then). The service runs on its own callback group of a
MultiThreadedExecutor, so state keeps arriving while it waits.

Parameters:
    mode (string, 'scripted'): scripted | operator.
    home_m (double[3], [0.45, 0.0, 0.20]): EE home position, base frame, m.
    gain_per_s (double, 2.0): proportional gain of the home motion, 1/s.
    max_speed_mps (double, 0.1): speed cap of the home motion, m/s.
    tolerance_m (double, 0.005): home reached within this distance, m.
    control_rate_hz (double, 10.0): rate of the home-motion commands.
    settle_s (double, 0.5): wait after reaching home before replying, s.
    timeout_s (double, 60.0): a reset that takes longer fails (the caller retries).
    goal_m (double[3], [0.55, 0.10, 0.025]): goal reported when no /selfalign/goal_pose came.

Subscribes:
    /joint_states (sensor_msgs/JointState), /ee_pose, /object_pose (geometry_msgs/PoseStamped),
    /ee_wrench (geometry_msgs/WrenchStamped): best effort (REP-2003).
    /selfalign/goal_pose (geometry_msgs/PoseStamped, transient local): optional goal.

Services:
    /selfalign/reset_episode (selfalign_interfaces/srv/ResetEpisode): the reset.
    ~/confirm (std_srvs/Trigger): operator mode: the scene is ready.

Publishes:
    /servo_node/delta_twist_cmds (geometry_msgs/TwistStamped), /gripper_controller/commands
    (std_msgs/Float64MultiArray): reliable, only while a reset runs.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
import numpy as np
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from selfalign_core import contract as C
from selfalign_core import contract_msgs as M
from selfalign_core import names as N
from selfalign_core.executors import run_node
from selfalign_core.qos import LATCHED, RELIABLE
from selfalign_interfaces.srv import ResetEpisode

MODES = ('scripted', 'operator')


def home_velocity(ee_pos_m: np.ndarray, home_m: np.ndarray, gain_per_s: float,
                  max_speed_mps: float, tolerance_m: float) -> tuple[np.ndarray, bool]:
    """Proportional home motion: (EE velocity (3,) m/s towards ``home_m``, reached?).

    v = gain * (home - ee), norm capped at ``max_speed_mps``; zero once within ``tolerance_m``.
    """
    err = np.asarray(home_m, dtype=np.float64) - np.asarray(ee_pos_m, dtype=np.float64)
    dist = float(np.linalg.norm(err))
    if dist <= tolerance_m:
        return np.zeros(3), True
    v = gain_per_s * err
    speed = float(np.linalg.norm(v))
    if speed > max_speed_mps:
        v *= max_speed_mps / speed
    return v, False


def _desc(text: str, lo: float | None = None, hi: float | None = None) -> ParameterDescriptor:
    d = ParameterDescriptor(description=text, read_only=True)
    if lo is not None:
        d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi)]
    return d


class ResetNode(Node):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__('reset_node')
        specs = [
            ('mode', 'scripted', _desc(f'reset mode, one of {MODES}')),
            ('home_m', [0.45, 0.0, 0.20], _desc('EE home position (x, y, z), base frame, m')),
            ('gain_per_s', 2.0, _desc('proportional gain of the home motion, 1/s', 0.01, 50.0)),
            ('max_speed_mps', 0.1, _desc('speed cap of the home motion, m/s', 0.001, 1.0)),
            ('tolerance_m', 0.005, _desc('home reached within this distance, m', 1e-4, 0.1)),
            ('control_rate_hz', 10.0, _desc('home-motion command rate, Hz', 1.0, 1000.0)),
            ('settle_s', 0.5, _desc('wait after reaching home, s', 0.0, 60.0)),
            ('timeout_s', 60.0, _desc('a reset taking longer fails, s', 0.1, 3600.0)),
            ('goal_m', [0.55, 0.10, 0.025], _desc('goal reported without /selfalign/goal_pose, '
                                                   'base frame, m')),
        ]
        self.p = {n: self.declare_parameter(n, v, d).value for n, v, d in specs}
        if self.p['mode'] not in MODES:
            raise ValueError(f"parameter mode={self.p['mode']!r}: choose one of {MODES}")
        for name in ('home_m', 'goal_m'):
            v = self.p[name]
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                raise ValueError(f'parameter {name}={list(v)!r}: must be 3 finite numbers, m')
        self._lock = threading.Lock()
        self._latest: dict[str, Any] = {}
        self._confirmed = threading.Event()
        self._busy = threading.Lock()
        self._episodes = 0
        sensor = qos_profile_sensor_data
        for msg_type, topic, kind in ((JointState, C.JOINT_STATES, 'joint_states'),
                                      (PoseStamped, C.EE_POSE, 'ee_pose'),
                                      (PoseStamped, C.OBJECT_POSE, 'object_pose'),
                                      (WrenchStamped, C.EE_WRENCH, 'ee_wrench')):
            self.create_subscription(msg_type, topic,
                                     lambda m, k=kind: self._store(k, m), sensor)
        self.create_subscription(PoseStamped, N.GOAL_POSE, lambda m: self._store('goal', m),
                                 LATCHED)
        self._pub_twist = self.create_publisher(TwistStamped, C.TWIST_CMD, RELIABLE)
        self._pub_grip = self.create_publisher(Float64MultiArray, C.GRIPPER_CMD, RELIABLE)
        self.create_service(ResetEpisode, C.RESET_EPISODE, self._on_reset,
                            callback_group=ReentrantCallbackGroup())
        self.create_service(Trigger, '~/confirm', self._on_confirm,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f'reset_node ready: {self.p}')

    def _store(self, kind: str, msg: Any) -> None:
        with self._lock:
            self._latest[kind] = msg

    def _get(self, kind: str) -> Any:
        with self._lock:
            return self._latest.get(kind)

    def _on_confirm(self, request: Trigger.Request, response: Trigger.Response
                    ) -> Trigger.Response:
        waiting = self._busy.locked() and self.p['mode'] == 'operator'
        self._confirmed.set()
        response.success = True
        response.message = 'confirmed' if waiting else 'confirmed (no reset was waiting)'
        return response

    def _send(self, v: np.ndarray) -> None:
        self._pub_twist.publish(M.twist_msg(v, self.get_clock().now().nanoseconds))

    def _home_motion(self, deadline: float) -> str | None:
        """Drive home; None on success, else why it failed."""
        period = 1.0 / self.p['control_rate_hz']
        home = np.asarray(self.p['home_m'])
        while time.monotonic() < deadline:
            ee = self._get('ee_pose')
            if ee is None:
                time.sleep(period)
                continue
            pos, _ = M.pose_arrays(ee)
            v, done = home_velocity(pos, home, self.p['gain_per_s'], self.p['max_speed_mps'],
                                    self.p['tolerance_m'])
            self._send(v)
            if done:
                return None
            time.sleep(period)
        self._send(np.zeros(3))
        return f'home {home.tolist()} not reached within timeout_s={self.p["timeout_s"]} s'

    def _on_reset(self, request: ResetEpisode.Request,
                  response: ResetEpisode.Response) -> ResetEpisode.Response:
        if not self._busy.acquire(blocking=False):
            response.success = False
            response.message = 'a reset is already running'
            return response
        try:
            deadline = time.monotonic() + self.p['timeout_s']
            self._pub_grip.publish(M.gripper_msg(C.ActionScale().gripper_open_m))
            if self.p['mode'] == 'scripted':
                why = self._home_motion(deadline)
            else:
                self._send(np.zeros(3))
                self._confirmed.clear()
                self.get_logger().warning('reset: put the block back, then call '
                                          f'{self.get_fully_qualified_name()}/confirm')
                why = (None if self._confirmed.wait(max(deadline - time.monotonic(), 0.0))
                       else f'no operator confirmation within timeout_s={self.p["timeout_s"]}')
            if why is None:
                time.sleep(self.p['settle_s'])
                kinds = ('joint_states', 'ee_pose', 'object_pose')
                wait_until = max(deadline, time.monotonic() + 5.0)
                while (missing := [k for k in kinds if self._get(k) is None]) and (
                        time.monotonic() < wait_until):
                    time.sleep(0.05)  # a driver just discovered: give its state a moment
                if missing:
                    why = f'no {missing} from the driver; check the contract topics'
            if why is not None:
                response.success = False
                response.message = f'reset failed: {why}'
                self.get_logger().error(response.message)
                return response
            return self._fill(request, response)
        finally:
            self._busy.release()

    def _fill(self, request: ResetEpisode.Request,
              response: ResetEpisode.Response) -> ResetEpisode.Response:
        js, ee, obj = self._get('joint_states'), self._get('ee_pose'), self._get('object_pose')
        wrench = self._get('ee_wrench') or WrenchStamped(header=ee.header)
        goal = self._get('goal')
        if goal is None:
            goal = M.pose_msg(np.asarray(self.p['goal_m']), np.array([0.0, 0.0, 0.0, 1.0]),
                              ee.header.stamp)
        self._episodes += 1
        response.success = True
        response.seed = int(request.seed) if request.seed >= 0 else self._episodes - 1
        response.message = f'episode {self._episodes} ({self.p["mode"]} reset)'
        response.joint_state, response.ee_pose, response.ee_wrench = js, ee, wrench
        response.object_pose, response.goal_pose = obj, goal
        response.block_rest_z = float(M.pose_arrays(obj)[0][2])
        self.get_logger().info(response.message)
        return response


def main(args: list[str] | None = None) -> None:
    run_node(ResetNode, num_threads=3, args=args)


if __name__ == '__main__':
    main()
