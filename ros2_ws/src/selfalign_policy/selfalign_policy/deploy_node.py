"""deploy_node: runs a trained DrQ-v2 policy on a robot that speaks the robot contract.

Inference only: the checkpoint's actor, deterministic (its mean: no exploration, no training),
on a steady timer at control_rate_hz from the latest observations, every command through
``safety.SafetyLayer`` (e-stop latch, observation watchdog, speed, workspace box, gripper force).
Episodes are reset through ``selfalign/reset_episode`` (reset_node on hardware, the bridge in a
rehearsal) and published like policy_node's (with the reward in force, when a spec comes), so the
monitor records a deployment like a training run. ``ros2 launch selfalign_bringup
deploy.launch.py checkpoint:=runs/<run>/checkpoint.pt`` starts it (``wiring.deploy_plan``).

Parameters: those policy_node shares (task, obs, mode, reward_source, seed, run_dir,
state_timeout_s, key_frames, key_frames_topic, videos_per_eval; see policy_node) and
    checkpoint (string, ''): checkpoint file ('' = <run_dir>/checkpoint.pt).
    control_rate_hz (double, 10.0): command rate.
    deploy_episodes (int, 0): episodes to run, then hold (0 = until shutdown).
    deploy_stop_on_success (bool, true): end an episode once the task succeeded.
    safety_workspace_low_m / safety_workspace_high_m (double[3]): EE box, base frame.
    safety_max_ee_speed_mps (double, 0.3), safety_max_gripper_force_n (double, 15.0),
    observation_timeout_s (double, 0.3): safety limits (see safety.SafetyConfig).

Subscribes, publishes and calls what policy_node does, and
    selfalign/estop (std_msgs/Bool, reliable): true latches the e-stop at once.
Services:
    selfalign/estop_release (std_srvs/Trigger): clears the e-stop latch when the last
        selfalign/estop message was false; the next episode starts with a reset.
"""

from __future__ import annotations

from pathlib import Path
import threading
import time
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from selfalign_core import contract as C
from selfalign_core import contract_msgs as cm
from selfalign_core import features as F
from selfalign_core import names as N
from selfalign_core import tasks
from selfalign_core.episode import EpisodeRecord
from selfalign_core.executors import run_node
from selfalign_core.qos import RELIABLE
from selfalign_interfaces.srv import ResetEpisode
from selfalign_policy.policy_node import DEPLOY, RobotPolicyNode
from selfalign_policy.safety import DeployedPolicy, RobotState, SafetyConfig, SafetyLayer
from selfalign_policy.trainer import CHECKPOINT_NAME, EpisodeData
from selfalign_reward.msgs import episode_to_msg


class DeployNode(RobotPolicyNode):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__('deploy_node', DEPLOY)
        self._init_deploy()

    def _init_deploy(self) -> None:
        """Inference only: policy from the checkpoint, safety layer, e-stop, control timer."""
        import torch

        p = self._p
        torch.set_num_threads(1)
        path = p['checkpoint'] or (str(Path(p['run_dir']) / CHECKPOINT_NAME)
                                   if p['run_dir'] else '')
        if not path:
            raise ValueError('deploy: set parameter checkpoint (or run_dir) to the trained '
                             'checkpoint.pt')
        if not Path(path).is_file():
            raise ValueError(f'deploy: checkpoint {path!r} does not exist; pass the file the '
                             'trainer wrote (<run_dir>/checkpoint.pt)')
        self.policy = DeployedPolicy(path, device='cpu')
        period = 1.0 / float(p['control_rate_hz'])
        try:
            self.safety = SafetyLayer(SafetyConfig(
                workspace_low_m=tuple(p['safety_workspace_low_m']),
                workspace_high_m=tuple(p['safety_workspace_high_m']),
                max_ee_speed_mps=p['safety_max_ee_speed_mps'],
                max_gripper_force_n=p['safety_max_gripper_force_n'],
                observation_timeout_s=p['observation_timeout_s'], control_period_s=period))
        except ValueError as exc:
            raise ValueError(f'deploy: bad safety parameter: {exc}') from None
        self._cmd_lock = threading.Lock()  # a stop published by the e-stop is never overtaken
        self._estop_msg = False
        self._dep: dict[str, Any] = {'phase': 'reset', 'future': None, 'episodes': 0,
                                     'seed': int(p['seed']), 'sent_at': 0.0}
        safety_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Bool, N.ESTOP, self._on_estop, RELIABLE,
                                 callback_group=safety_group)
        self.create_service(Trigger, N.ESTOP_RELEASE, self._on_estop_release,
                            callback_group=safety_group)
        self._deploy_timer = self.create_timer(
            period, self._deploy_tick, callback_group=MutuallyExclusiveCallbackGroup(),
            clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f'deploy: policy from {path} (trained {self.policy.env_step} env '
                               f'steps), {p["control_rate_hz"]} Hz, {self.safety.cfg}')

    def _send_stop(self) -> None:
        """Zero twist, no gripper command (the gripper holds its last target)."""
        self.port.pub_twist.publish(cm.twist_msg(np.zeros(3), self.get_clock().now().nanoseconds))

    def _on_estop(self, msg: Bool) -> None:
        self._estop_msg = bool(msg.data)
        if not msg.data:
            return
        with self._cmd_lock:
            first = not self.safety.estop_latched
            self.safety.engage_estop('estop topic')
            self._send_stop()
        if first:
            self._dep['phase'] = 'estopped'
            self.get_logger().error(f'E-STOP on {N.ESTOP}: arm stopped; call {N.ESTOP_RELEASE} '
                                    'after the e-stop is cleared (false) to continue')
            self._publish_stats({'kind': 'estop', 'engaged': True})

    def _on_estop_release(self, request: Trigger.Request,
                          response: Trigger.Response) -> Trigger.Response:
        if self._estop_msg:
            response.success = False
            response.message = f'{N.ESTOP} is still true: clear it (publish false) first'
            return response
        with self._cmd_lock:
            self.safety.release_estop()
            self._dep.update(phase='reset', future=None)
        response.success = True
        response.message = 'e-stop released; the next episode starts with a reset'
        self.get_logger().warning(response.message)
        self._publish_stats({'kind': 'estop', 'engaged': False})
        return response

    def _robot_state(self, out: Any) -> RobotState:
        raw = out.raw
        return RobotState(np.asarray(raw['ee_pos'], np.float64), float(raw['finger_width']),
                          np.array([raw['force_left'], raw['force_right']], np.float64))

    def _act_and_send(self, out: Any, msgs: dict[str, Any] | None) -> None:
        """Deterministic action on ``out`` -> safety -> publish; remembers the action."""
        if self.env.obs_mode == 'pixels':
            frame = np.ascontiguousarray(cm.image_array(msgs['image']).transpose(2, 0, 1))
        else:
            frame = out.observation
        action = self.policy.act(frame)
        velocity, width = C.action_to_command(action, self.env.action_scale)
        with self._cmd_lock:
            cmd = self.safety.filter(velocity, width, self._robot_state(out),
                                     self.port.watchdog.age_s(time.monotonic()))
            if cmd.stopped:
                self._send_stop()
            else:
                if cmd.finger_width_m is not None:
                    self.port.pub_grip.publish(cm.gripper_msg(cmd.finger_width_m))
                self.port.pub_twist.publish(cm.twist_msg(cmd.velocity_mps,
                                                     self.get_clock().now().nanoseconds))
        self._dep['action'] = action

    def _deploy_tick(self) -> None:
        d, log = self._dep, self.get_logger()
        if d['phase'] in ('done', 'estopped') or self.safety.estop_latched:
            with self._cmd_lock:
                self._send_stop()
            return
        if d['phase'] == 'reset':
            self._deploy_reset()
            return
        now = time.monotonic()
        if self.safety.is_stale(self.port.watchdog.age_s(now)):
            with self._cmd_lock:
                self.safety.filter(np.zeros(3), 0.0, None, None)  # counts the intervention
                self._send_stop()
            log.warning(f'observations stale (> {self.safety.cfg.observation_timeout_s} s): arm '
                        'stopped until the driver publishes again', throttle_duration_sec=2.0)
            return
        msgs = self.port.sync.wait_newer(d['reset_ns'] - 1, 0.0)
        if msgs is None:  # still the previous episode's messages: wait for this one's
            return
        out = self.env.builder.step(self.env._snapshot(msgs), d['action'])
        d['features'].append(out.packed)
        d['actions'].append(d['action'])
        d['flags'].append(bool(tasks.step_condition(self._p['task'], out.features)[0]))
        task = self._p['task']
        ep = np.stack(d['features'])
        success = bool(tasks.episode_success(task, F.unpack(ep)))
        if len(ep) >= tasks.get_task(task).episode_steps or (
                success and self._p['deploy_stop_on_success']):
            self._deploy_finish(ep, success)
            return
        self._act_and_send(out, msgs)

    def _deploy_reset(self) -> None:
        d = self._dep
        with self._cmd_lock:
            self._send_stop()
        if d['future'] is None:
            if not self.port.reset_client.service_is_ready():
                self.get_logger().warning(f'deploy: waiting for {C.RESET_EPISODE}',
                                          throttle_duration_sec=5.0)
                return
            d['future'] = self.port.reset_client.call_async(ResetEpisode.Request(seed=d['seed']))
            d['sent_at'] = time.monotonic()
            return
        if not d['future'].done():
            if time.monotonic() - d['sent_at'] > 120.0:  # hardware resets may take a while
                d['future'].cancel()
                d['future'] = None
            return
        reply, d['future'] = d['future'].result(), None
        if reply is None or not reply.success:
            self.get_logger().warning(f'deploy: reset failed ({getattr(reply, "message", "")}); '
                                      'retrying', throttle_duration_sec=5.0)
            return
        msgs = {'joint_states': reply.joint_state, 'ee_pose': reply.ee_pose,
                'object_pose': reply.object_pose, 'ee_wrench': reply.ee_wrench}
        goal, _ = cm.pose_arrays(reply.goal_pose)
        out = self.env.builder.reset(self.env._snapshot(msgs), goal, reply.block_rest_z)
        self.policy.reset()
        d.update(phase='run', features=[], actions=[], flags=[], episode_seed=int(reply.seed),
                 action=np.zeros(C.ACTION_DIM, np.float32), t0=time.monotonic(),
                 reset_ns=cm.stamp_ns(reply.ee_pose.header.stamp))
        img = None
        if self.env.obs_mode == 'pixels':
            img = self.port.sync.wait_newer(-1, 0.0)
            if img is None:
                return  # no image yet: the first tick acts
        self._act_and_send(out, img)

    def _deploy_finish(self, ep: np.ndarray, success: bool) -> None:
        d, p = self._dep, self._p
        with self._cmd_lock:
            self._send_stop()
        with self._reward_lock:
            fn, version = self._reward_fn, self._reward_version
        rewards = (np.asarray(fn(ep), np.float32) if fn is not None
                   else np.zeros(len(ep), np.float32))
        data = EpisodeData(task=p['task'], features=ep.astype(np.float32),
                           actions=np.stack(d['actions']).astype(np.float32), rewards=rewards,
                           success_flags=np.asarray(d['flags'], bool), success=success,
                           block_rest_z=float(self.env.builder.block_rest_z),
                           seed=d['episode_seed'], episode_index=d['episodes'], env_step=0,
                           reward_version=version, evaluation=True,
                           extra={'return': float(rewards.sum())})
        msg = episode_to_msg(EpisodeRecord(**data.record_fields()))
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pub_episode.publish(msg)
        self._publish_stats({'kind': 'deploy_episode', 'episode_index': d['episodes'],
                             'seed': d['episode_seed'], 'success': success, 'steps': len(ep),
                             'wall_s': time.monotonic() - d['t0'],
                             'interventions': dict(self.safety.interventions)})
        d['episodes'] += 1
        d['seed'] = -1  # the driver's own sequence from here on
        more = p['deploy_episodes'] == 0 or d['episodes'] < p['deploy_episodes']
        d['phase'] = 'reset' if more else 'done'
        if not more:
            self._publish_stats({'kind': 'done', 'deploy_episodes': d['episodes']})

    def close(self) -> None:
        """Stop the arm (Ctrl-C, or the launcher ending); nothing to save."""
        self._stop.set()
        try:
            with self._cmd_lock:
                self._send_stop()
        except Exception:  # noqa: BLE001 - the context may already be shut down
            pass


def main(args: list[str] | None = None) -> None:
    run_node(DeployNode, num_threads=2, args=args)


if __name__ == '__main__':
    main()
