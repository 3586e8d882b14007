"""policy_node: trains DrQ-v2 on a robot that speaks the robot contract (sim bridge or real arm).

Thin wrapper: ROS parameters -> ``config.DrQV2Config``; the training loop is
``trainer.Trainer`` on a ``robot_env.RobotContractEnv``, run on a worker thread so gradient
updates never block the executor (which keeps receiving state, reward specs and service
replies). The reward is data: the latched ``/selfalign/reward_spec`` is turned into a local
vectorised ``selfalign_reward.evaluate.RewardFunction``; a new spec re-scores the whole replay.
Training starts when the first spec arrives (or at once with ``reward_source: oracle``, the
hand-written baseline). A driver that stops publishing pauses training with a throttled warning.

Parameters:
    task (string, 'touch'): touch | grasp_lift | push.
    obs (string, 'state'): state | pixels (pixels need the driver's camera at image_size_px).
    mode (string, 'lockstep'): lockstep | realtime (documentation of the driver's mode; the
        node always waits for the state stamped after its command).
    reward_source (string, 'spec'): spec (wait for /selfalign/reward_spec) | oracle.
    total_env_steps (int, 30000): training steps; the node idles (still serving) afterwards.
    seed (int, 0): seeds torch / numpy / replay / episode seeds.
    run_dir (string, ''): checkpoints go to <run_dir>/checkpoint.pt ('' = none).
    resume (bool, false): continue from <run_dir>/checkpoint.pt if it exists.
    checkpoint_every_steps (int, 10000), eval_every_steps (int, 5000), eval_episodes (int, 5).
    hidden_dim (int, 256), lr (double, 3e-4), batch_size (int, 256), num_expl_steps (int, 2000),
    update_every_steps (int, 1), stddev_steps (int, 30000), critic_target_tau (double, 0.01),
    replay_capacity (int, 100000),
    replay_memory_mb (int, 0): size the replay from a memory budget instead (pixels: ~21 KB a
        transition, so 2048 MiB hold ~100k); the capacity it implies is logged, and a budget
        that holds fewer than two episodes or exceeds the memory available is refused naming
        the parameter.
    device (string, 'cpu'): DrQ-v2 hyper-parameters (see config.py).
    state_timeout_s (double, 2.0): a robot silent this long mid-episode aborts the episode (it
        stopped or restarted); training resumes with a reset once a driver serves again.
    stats_every_updates (int, 100): publish update metrics every this many updates.
    overlap_updates (bool, true): run the updates a step made due while the next command is
        out, so the driver steps while the learner computes (false: before choosing it).
    episode_subscriber_wait_s (double, 10.0): before training, wait up to this long for a
        subscriber of selfalign/episode (monitor, alignment), so none misses the first episodes.
    key_frames (int, 0): attach K camera frames, spread over the episode, to every Episode
        (JPEG, for a vision LLM); they come from key_frames_topic, stamped like the states
        (the PyBullet bridge publishes them with key_frame_every_steps > 0). 0 = none.
    key_frames_topic (string, 'camera/video/image_raw'): where the key frames come from.
    workers (int, 1): arms this node steps. 1: the contract at the node's own names. N > 1: N
        drivers under arm_0/ ... arm_{N-1}/ (relative to the node's namespace), stepped
        together: one batched forward pass picks N actions, every command goes out before any
        state is awaited, episodes go into one replay and one learner (``trainer``'s module
        docstring); episodes carry the worker's name.
    videos_per_eval (int, 1): the first this many evaluation episodes of each round
        are reset with ResetEpisode.render_video (the driver films them for monitor_node's
        evaluation videos); 0 = none.

Running a trained policy without training (inference, safety layer, e-stop) is its own node,
``deploy_node`` (same shared infrastructure, ``RobotPolicyNode``).

Subscribes:
    /joint_states (sensor_msgs/JointState), /ee_pose, /object_pose (geometry_msgs/PoseStamped),
    /ee_wrench (geometry_msgs/WrenchStamped), /camera/image_raw (sensor_msgs/Image, pixels only):
    best effort (REP-2003).
    /selfalign/reward_spec (selfalign_interfaces/RewardSpec, reliable + transient local).

Publishes:
    /servo_node/delta_twist_cmds (geometry_msgs/TwistStamped), /gripper_controller/commands
    (std_msgs/Float64MultiArray): reliable, depth 10.
    /selfalign/episode (selfalign_interfaces/Episode): every finished episode (eval ones flagged).
    /selfalign/policy_stats (std_msgs/String): JSON of update metrics / evaluation results.

Calls:
    /selfalign/reset_episode (selfalign_interfaces/srv/ResetEpisode).

(Names are relative: under a namespace they move with it.)
"""

from __future__ import annotations

from collections.abc import Callable
import json
from pathlib import Path
import threading
import time
from typing import Any

from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from selfalign_core import contract as C
from selfalign_core import contract_msgs as cm
from selfalign_core import features as F
from selfalign_core import names as N
from selfalign_core import tasks
from selfalign_core.episode import EpisodeRecord
from selfalign_core.executors import run_node
from selfalign_core.names import under, worker_name
from selfalign_core.polled import PolledSubscription, PollGroup
from selfalign_core.qos import LATCHED, RELIABLE
from selfalign_interfaces.msg import Episode, RewardSpec
from selfalign_interfaces.srv import ResetEpisode
from selfalign_policy.config import ConfigError, DrQV2Config
from selfalign_policy.frame_buffer import FrameBuffer, pick_key_frames
from selfalign_policy.replay import capacity_for_memory, slot_bytes
from selfalign_policy.robot_env import EnvStoppedError, RobotContractEnv, StateSync
from selfalign_policy.safety import (
    ObservationWatchdog,
)
from selfalign_policy.trainer import Callbacks, CHECKPOINT_NAME, EpisodeData, Trainer
from selfalign_reward.evaluate import RewardFunction, RewardRuntimeError
from selfalign_reward.msgs import episode_to_msg, spec_from_msg

#: Camera frames kept while an episode runs, for its key frames (the newest; ~230 KB each).
KEY_FRAME_BUFFER_MB = 64
#: Side of the pixel observations (the driver's camera publishes this size).
PIXEL_SIZE_PX = 84


def _available_mb() -> float | None:
    """MemAvailable from /proc/meminfo, MiB (None where there is no such file)."""
    try:
        with open('/proc/meminfo') as fh:
            for line in fh:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _desc(text: str, lo: float | None = None, hi: float | None = None,
          integer: bool = False) -> ParameterDescriptor:
    d = ParameterDescriptor(description=text)
    if lo is not None and integer:
        d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    elif lo is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi))]
    return d


def _specs() -> list[tuple[str, Any, ParameterDescriptor]]:
    """Every parameter of the robot-driving nodes: (name, default, descriptor); each node
    declares its subset (COMMON | TRAINING for policy_node, COMMON | DEPLOY for deploy_node)."""
    return [

        ('task', 'touch', _desc('task: touch | grasp_lift | push')),
        ('obs', 'state', _desc('observation: state | pixels')),
        ('mode', 'lockstep', _desc('driver mode: lockstep | realtime (the node waits for '
                                   'the state stamped after each command in both)')),
        ('reward_source', 'spec', _desc('spec: train on /selfalign/reward_spec; oracle: '
                                        'the hand-written baseline reward')),
        ('total_env_steps', 30000, _desc('training env steps', 0, 10**9, True)),
        ('seed', 0, _desc('seed of torch, numpy, replay and episode seeds', 0, 2**31 - 1,
                          True)),
        ('run_dir', '', _desc("checkpoint directory ('' = no checkpoints)")),
        ('resume', False, _desc('continue from <run_dir>/checkpoint.pt if present')),
        ('checkpoint_every_steps', 10000, _desc('checkpoint period, env steps (0 = never)',
                                                0, 10**9, True)),
        ('eval_every_steps', 5000, _desc('evaluation period, env steps (0 = never)', 0,
                                         10**9, True)),
        ('eval_episodes', 5, _desc('deterministic episodes per evaluation', 0, 1000, True)),
        ('hidden_dim', 256, _desc('MLP width of actor and Q heads', 8, 4096, True)),
        ('lr', 3e-4, _desc('Adam learning rate (3e-4 learns push within 60k steps; '
                           'docs/tasks.md)', 1e-6, 1e-2)),
        ('batch_size', 256, _desc('transitions per update', 1, 4096, True)),
        ('num_expl_steps', 2000, _desc('uniform-random env steps before the policy acts',
                                       0, 10**7, True)),
        ('update_every_steps', 1, _desc('env steps per gradient update (1 learns push by 45k '
                                        'env steps, 2 not by 60k: docs/tasks.md; DrQ-v2 uses 2 '
                                        'for pixels)', 1, 100, True)),
        ('stddev_steps', 30000, _desc('env steps of the exploration std schedule '
                                      'linear(1.0, 0.1, N)', 1, 10**9, True)),
        ('critic_target_tau', 0.01, _desc('soft update rate of the target critic per update '
                                          "(DrQ-v2's 0.01; 0.005 learned the oracle push on 3 "
                                          'of 3 seeds: docs/tasks.md)', 1e-4, 1.0)),
        ('replay_capacity', 100000, _desc('replay slots', 16, 10**8, True)),
        ('replay_memory_mb', 0, _desc('size the replay from this memory budget, MiB (the '
                                      'capacity it implies is logged); 0 = use '
                                      'replay_capacity', 0, 10**7, True)),
        ('device', 'cpu', _desc('cpu | cuda | auto')),
        ('state_timeout_s', 2.0, _desc('abort the episode (then reset) when the robot is '
                                       'silent this long mid-episode, s', 0.05, 600.0)),
        ('stats_every_updates', 100, _desc('publish update metrics every N updates', 1,
                                           10**6, True)),
        ('overlap_updates', True, _desc('run the gradient updates a step made due while the '
                                        'next command is out (the driver steps meanwhile); '
                                        'false: before choosing it')),
        ('episode_subscriber_wait_s', 10.0, _desc(
            'before training, wait this long for a subscriber of the episode topic (the '
            'monitor, alignment), so none misses the first episodes', 0.0, 600.0)),
        ('key_frames', 0, _desc('camera frames per Episode for a vision LLM (0 = none)',
                                0, 64, True)),
        ('key_frames_topic', 'camera/video/image_raw',
         _desc('topic of the key frames (sensor_msgs/Image)')),
        ('workers', 1, _desc('arms stepped by this node: 1 = the contract at its own names; N '
                             '> 1 = arm_0/ ... arm_{N-1}/ (one driver each, own seeds), '
                             'one batched forward pass per step, one replay', 1, 64, True)),
        ('videos_per_eval', 1, _desc('evaluation episodes per round the driver is '
                                             'asked to film (render_video)', 0, 1000,
                                             True)),
        ('checkpoint', '', _desc("deploy: checkpoint file ('' = <run_dir>/checkpoint.pt)")),
        ('control_rate_hz', 10.0, _desc('deploy: command rate, Hz', 1.0, 1000.0)),
        ('deploy_episodes', 0, _desc('deploy: episodes to run, then hold (0 = forever)', 0,
                                     10**9, True)),
        ('deploy_stop_on_success', True, _desc('deploy: end an episode once the task '
                                               'succeeded (hold steps met)')),
        ('safety_workspace_low_m', [0.30, -0.30, 0.015],
         _desc('deploy: lower corner (x, y, z) of the EE box, base frame, m')),
        ('safety_workspace_high_m', [0.75, 0.30, 0.40],
         _desc('deploy: upper corner (x, y, z) of the EE box, base frame, m')),
        ('safety_max_ee_speed_mps', 0.3, _desc('deploy: EE speed cap (norm), m/s', 0.001,
                                               2.0)),
        ('safety_max_gripper_force_n', 15.0, _desc('deploy: per-pad contact force above '
                                                   'which the gripper stops closing, N',
                                                   0.01, 1000.0)),
        ('observation_timeout_s', 0.3, _desc('deploy: watchdog, stop the arm when the '
                                             'newest observation is older, s', 0.001,
                                             60.0)),
    ]


#: Parameters of both nodes.
COMMON = frozenset({'task', 'obs', 'mode', 'reward_source', 'seed', 'run_dir', 'state_timeout_s',
                    'key_frames', 'key_frames_topic', 'videos_per_eval'})
#: deploy_node's own parameters.
DEPLOY = frozenset({'checkpoint', 'control_rate_hz', 'deploy_episodes', 'deploy_stop_on_success',
                    'safety_workspace_low_m', 'safety_workspace_high_m',
                    'safety_max_ee_speed_mps', 'safety_max_gripper_force_n',
                    'observation_timeout_s'})
#: policy_node's own parameters (the learner).
TRAINING = frozenset(name for name, _, _ in _specs()) - COMMON - DEPLOY


class ArmPort:
    """One arm's side of the robot contract, its names under worker ``name`` ('' or 'arm_i'):
    state in (``sync``, ``watchdog``), commands and resets out (the ``Transport`` of its
    ``RobotContractEnv``), its key frames."""

    def __init__(self, node: Node, name: str, obs: str, key_frames: int,
                 key_frames_topic: str, polled: bool = False) -> None:
        self.node = node
        self.name = name
        self.sync = StateSync(('joint_states', 'ee_pose', 'object_pose')
                              + (('image',) if obs == 'pixels' else ()))
        self.watchdog = ObservationWatchdog(self.sync.kinds)
        self.pub_twist = node.create_publisher(TwistStamped, under(name, C.TWIST_CMD), RELIABLE)
        self.pub_grip = node.create_publisher(Float64MultiArray, under(name, C.GRIPPER_CMD),
                                              RELIABLE)
        sensor = qos_profile_sensor_data
        #: with ``polled`` the state subscriptions are taken by the thread that waits for the
        #: state (``StateSync.pump``), not by the executor (``selfalign_core.polled``)
        self._polled: list[tuple[str, PolledSubscription]] = []
        for kind, msg_type, topic in (
                ('joint_states', JointState, C.JOINT_STATES), ('ee_pose', PoseStamped, C.EE_POSE),
                ('object_pose', PoseStamped, C.OBJECT_POSE),
                ('ee_wrench', WrenchStamped, C.EE_WRENCH)) + (
                (('image', Image, C.CAMERA_IMAGE),) if obs == 'pixels' else ()):
            if polled:
                self._polled.append((kind, PolledSubscription(node, msg_type, under(name, topic),
                                                              sensor)))
            else:
                node.create_subscription(msg_type, under(name, topic),
                                         lambda m, k=kind: self._on_state(k, m), sensor)
        if polled:
            self._poll_group = PollGroup(node, [sub for _, sub in self._polled])
            self._kind_of = {sub: kind for kind, sub in self._polled}
            self.sync.pump = self._pump
        self.key_frames: FrameBuffer | None = None
        if key_frames > 0:
            self.key_frames = FrameBuffer(KEY_FRAME_BUFFER_MB * 2**20)
            node.create_subscription(Image, under(name, key_frames_topic), self.key_frames.put,
                                     30)
        self.reset_client = node.create_client(ResetEpisode, under(name, C.RESET_EPISODE))
        #: an in-process lockstep bridge's step (``link``), or None: the state comes over DDS
        self._linked_step: Callable[[Any, Any], dict[str, Any]] | None = None

    def link_refusal(self) -> str:
        """Why ``link`` would refuse this port ('' if it would not)."""
        if self.key_frames is not None or 'image' in self.sync.kinds:
            return 'a port with pixels or key frames takes its images over DDS'
        if not self._polled:  # deploy_node's callbacks, or linked already
            return 'only a polled port that is not linked yet can be linked'
        return ''

    def link(self, step: Callable[[Any, Any], dict[str, Any]]) -> None:
        """Step an in-process lockstep bridge directly (``PyBulletBridge.link``): each command
        is still published, and the state the bridge publishes for it is taken from ``step``'s
        return instead of the state topics, whose subscriptions are destroyed. Call before
        training starts. State observations only: a port with key frames or pixels keeps
        the topics (frames, and the image of a reset state, come over DDS)."""
        why = self.link_refusal()
        if why:
            raise ValueError(f'link: {why}')
        for _, sub in self._polled:
            sub.destroy()
        self._polled = []
        self.sync.pump = None
        self._linked_step = step

    def _on_state(self, kind: str, msg: Any) -> None:
        self.sync.put(kind, msg)
        self.watchdog.put(kind, cm.stamp_ns(msg.header.stamp), time.monotonic())

    def _pump(self, timeout_s: float) -> None:
        """Take one message of each state topic that has one, waiting up to ``timeout_s`` for
        the first (the wait set says which have one: no probing of empty queues)."""
        for sub in self._poll_group.ready(timeout_s):
            msg = sub.take()
            if msg is not None:
                self._on_state(self._kind_of[sub], msg)

    def destroy(self) -> None:
        for _, sub in self._polled:
            sub.destroy()
        self._polled = []

    # Transport
    def send_command(self, velocity_mps: np.ndarray, finger_width_m: float) -> None:
        """Gripper first (the bridge latches it), then the twist that triggers the step."""
        grip = cm.gripper_msg(finger_width_m)
        self.pub_grip.publish(grip)
        stamp = self.node.get_clock().now().nanoseconds
        twist = cm.twist_msg(velocity_mps, stamp)
        self.pub_twist.publish(twist)
        if self._linked_step is not None:
            state = self._linked_step(grip, twist)
            for kind in (*self.sync.kinds, 'ee_wrench'):
                if kind in state:
                    self._on_state(kind, state[kind])

    def reset(self, seed: int, timeout_s: float,
              render_video: bool = False) -> ResetEpisode.Response | None:
        if not self.reset_client.wait_for_service(timeout_sec=min(timeout_s, 1.0)):
            return None
        done = threading.Event()
        future = self.reset_client.call_async(
            ResetEpisode.Request(seed=int(seed), render_video=bool(render_video)))
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            future.cancel()
            return None
        return future.result()


class RobotPolicyNode(Node):
    """What policy_node and deploy_node share: the contract's state in, commands and resets
    out (one ``ArmPort`` per arm: ``workers`` of them under arm_0/ ... arm_{N-1}/, or one at
    the node's own names), the reward in force (from the latched spec, with the fallback to the
    previous one), episodes and stats out."""

    #: state taken by the thread that waits for it, not by the executor (``ArmPort``'s
    #: ``polled``): training waits for every step; deploy's watchdog needs callbacks
    POLL_STATE = False

    def __init__(self, node_name: str, own: frozenset[str], **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)  # Node options: parameter_overrides, cli_args
        p = self._declare(COMMON | own)
        self._p = p
        self.exit_code = 0  # non-zero after a fatal error (main() exits with it)
        self._stop = threading.Event()
        self._spec_ready = threading.Event()
        self._reward_lock = threading.Lock()
        self._reward_fn: Any = None
        #: rewards adopted so far, newest last: (fn, version, source); a reward that fails on
        #: real data is dropped and the one before it is back in force
        self._adopted: list[tuple[Any, int, str]] = []
        self._reward_version = 0
        workers = int(p.get('workers', 1))
        arms = [''] if workers == 1 else [worker_name(i) for i in range(workers)]
        self.ports = [ArmPort(self, arm, p['obs'], p['key_frames'], p['key_frames_topic'],
                              polled=self.POLL_STATE) for arm in arms]
        self.port = self.ports[0]
        self._pub_episode = self.create_publisher(Episode, C.EPISODE, RELIABLE)
        self._pub_stats = self.create_publisher(String, N.POLICY_STATS, RELIABLE)
        self.create_subscription(RewardSpec, C.REWARD_SPEC, self._on_spec, LATCHED)
        if p['reward_source'] == 'oracle':
            task = p['task']
            self._set_reward(lambda x: tasks.oracle_reward(task, F.unpack(x)), 0, 'oracle')
        self.envs = [RobotContractEnv(
            port, port.sync, p['task'], obs_mode=p['obs'], state_timeout_s=p['state_timeout_s'],
            warn=lambda s, w=port.name: self.get_logger().warning(
                f'{w}: {s}' if w else s, throttle_duration_sec=5.0),
            should_stop=self._stop.is_set,
            videos_per_eval=p['videos_per_eval']) for port in self.ports]
        self.env = self.envs[0]

    # ------------------------------------------------------------------ parameters
    def _replay_capacity(self, p: dict[str, Any]) -> int:
        """Replay slots from replay_memory_mb (or replay_capacity), checked against what fits."""
        frame = (3, PIXEL_SIZE_PX, PIXEL_SIZE_PX) if p['obs'] == 'pixels' else (F.OBS_DIM,)
        per = slot_bytes(frame, C.ACTION_DIM)
        need = 2 * tasks.get_task(p['task']).episode_steps + 16
        if p['replay_memory_mb'] > 0:
            name, mb = 'replay_memory_mb', float(p['replay_memory_mb'])
            capacity = capacity_for_memory(mb, frame, C.ACTION_DIM)
            if capacity < need:
                raise ValueError(
                    f'parameter replay_memory_mb = {p["replay_memory_mb"]}: holds {capacity} '
                    f'transitions of {per} bytes, fewer than two episodes ({need}); give at '
                    f'least {need * per / 2**20:.1f} MiB')
        else:
            name, capacity = 'replay_capacity', int(p['replay_capacity'])
            mb = capacity * per / 2**20
        available = _available_mb()
        if available is not None and mb > available:
            raise ValueError(f'parameter {name}: the replay needs {mb:.0f} MiB but only '
                             f'{available:.0f} MiB of memory are available; lower it (or set '
                             'replay_memory_mb to a budget that fits)')
        self.get_logger().info(f'replay: {capacity} transitions of {per} bytes = {mb:.0f} MiB '
                               f'(from {name})')
        return capacity

    def destroy_node(self) -> None:
        for port in self.ports:
            port.destroy()
        super().destroy_node()

    def _declare(self, names: frozenset[str]) -> dict[str, Any]:
        """Declare the parameters ``names`` of ``_specs()``; check the choices."""
        p = {name: self.declare_parameter(name, default, d).value
             for name, default, d in _specs() if name in names}
        for name, allowed in (('task', tuple(tasks.TASKS)), ('obs', ('state', 'pixels')),
                              ('mode', ('lockstep', 'realtime')),
                              ('reward_source', ('spec', 'oracle'))):
            if name in p and p[name] not in allowed:
                raise ValueError(f'parameter {name} = {p[name]!r}: choose one of {allowed}')
        return p

    def _drqv2_config(self, p: dict[str, Any]) -> DrQV2Config:
        """The learner's configuration from the training parameters."""
        try:
            return DrQV2Config.from_dict({
                'agent': {'hidden_dim': p['hidden_dim'], 'lr': p['lr'],
                          'batch_size': p['batch_size'], 'num_expl_steps': p['num_expl_steps'],
                          'update_every_steps': p['update_every_steps'],
                          'stddev_steps': p['stddev_steps'],
                          'critic_target_tau': p['critic_target_tau'], 'device': p['device']},
                'replay': {'capacity': self._replay_capacity(p)},
                'trainer': {'total_env_steps': p['total_env_steps'], 'seed': p['seed'],
                            'eval_every_steps': p['eval_every_steps'],
                            'eval_episodes': p['eval_episodes'],
                            'checkpoint_every_steps': p['checkpoint_every_steps'],
                            'run_dir': p['run_dir'], 'progress': False,
                            'metrics_every_updates': p['stats_every_updates'],
                            'overlap_updates': p['overlap_updates']}})
        except ConfigError as exc:
            raise ValueError(f'bad policy_node parameter: {exc}') from None

    # ------------------------------------------------------------------ reward spec
    def _set_reward(self, fn: Any, version: int, source: str) -> None:
        """Put a reward in force. LLM code is metered (selfalign_reward.meter), so an
        evaluation that would exceed its bounds raises RewardRuntimeError instead of hanging
        or exhausting memory; such a reward is dropped and the previous one comes back
        (``_reward_failed``), and training goes on."""
        guarded = self._guarded(fn, version)
        with self._reward_lock:
            previous = (self._reward_fn, self._reward_version)
            self._reward_fn = guarded
            self._reward_version = version
            self._adopted = [*self._adopted[-3:], (guarded, version, source)]
        trainer = getattr(self, 'trainer', None)
        if trainer is not None:
            trainer.set_reward_fn(guarded, version)
            with self._reward_lock:
                current = self._reward_version
            if current != version:  # it failed on the replay's own rows: the previous is back
                trainer.reward_version = current
                return
        self._spec_ready.set()
        self.get_logger().info(f'reward version {version} from {source} in force'
                               + (f' (was {previous[1]})' if previous[0] is not None else ''))

    def _guarded(self, fn: Any, version: int) -> Any:
        dropped = []  # once it failed, a reward only hands over to the one in force

        def reward(packed: np.ndarray) -> np.ndarray:
            if not dropped:
                try:
                    return fn(packed)
                except RewardRuntimeError as exc:
                    dropped.append(version)
                    self._reward_failed(version, exc)
            with self._reward_lock:
                current = self._reward_fn
            if current is None or current is reward:
                return np.zeros(len(packed), np.float32)
            return current(packed)
        return reward

    def _reward_failed(self, version: int, exc: Exception) -> None:
        """Drop reward ``version`` after it failed on real data; the previous one takes over."""
        with self._reward_lock:
            self._adopted = [a for a in self._adopted if a[1] != version]
            if self._reward_version != version:
                return  # not in force any more
            back = self._adopted[-1] if self._adopted else None
            self._reward_fn, self._reward_version = (back[0], back[1]) if back else (None, 0)
        what = (f'back to reward version {back[1]} ({back[2]})' if back else
                'no earlier reward to go back to: zero reward until a new spec arrives')
        self.get_logger().error(f'reward version {version} failed on real data ({exc}); {what}')
        trainer = getattr(self, 'trainer', None)
        if back is not None and trainer is not None:
            trainer.set_reward_fn(back[0], back[1])
        elif trainer is not None:
            trainer.reward_version = 0

    def _on_spec(self, msg: RewardSpec) -> None:
        if self._p['reward_source'] != 'spec':
            return
        try:
            template, theta, version, source = spec_from_msg(msg)
            fn = RewardFunction(template, nonfinite='zero')
        except (ValueError, RuntimeError) as exc:  # TemplateError is a ValueError
            self.get_logger().error(f'ignoring reward spec v{msg.version}: {exc}')
            return
        if msg.task and msg.task != self._p['task']:
            self.get_logger().warning(f'reward spec is for task {msg.task!r}, this node trains '
                                      f'{self._p["task"]!r}; using it anyway')
        self._set_reward(lambda x: fn.total(x, theta), version, source)

    # ------------------------------------------------------------------ training thread
    def _publish_episode(self, data: EpisodeData) -> None:
        msg = episode_to_msg(EpisodeRecord(**data.record_fields()))
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.start_stamp = cm.ns_to_stamp(int(data.extra.get('start_stamp_ns', 0)))
        msg.end_stamp = cm.ns_to_stamp(int(data.extra.get('end_stamp_ns', 0)))
        port = self._port_of(data.worker)
        if port.key_frames is not None:
            self._attach_key_frames(msg, port.key_frames, data.extra.get('stamps_ns') or [])
        self._pub_episode.publish(msg)
        self._publish_stats({'kind': 'episode', 'episode_index': data.episode_index,
                             'worker': data.worker,
                             'env_step': data.env_step, 'return': data.extra['return'],
                             'success': data.success, 'evaluation': data.evaluation})

    def _port_of(self, worker: str) -> ArmPort:
        return next((p for p in self.ports if p.name == worker), self.port)

    def _attach_key_frames(self, msg: Episode, frames: FrameBuffer, stamps: list[int]) -> None:
        """Up to ``key_frames`` frames stamped within this episode, evenly spread; each is
        labelled with the step of the latest state at or before it (a real camera's stamps
        need not equal the states')."""
        if len(stamps) < 2:
            return
        stamped = frames.stamped_between(stamps[0], stamps[-1], include_start=True)
        for step, image in pick_key_frames(stamped, stamps, self._p['key_frames']):
            msg.key_frames.append(cm.jpeg_msg(cm.image_array(image), image.header.stamp,
                                              image.header.frame_id))
            msg.key_frame_steps.append(int(step))

    def _publish_stats(self, payload: dict[str, Any]) -> None:
        self._pub_stats.publish(String(data=json.dumps(payload)))


class PolicyNode(RobotPolicyNode):
    """See the module docstring: trains DrQ-v2 on a worker thread."""

    POLL_STATE = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('policy_node', TRAINING, **kwargs)
        self.cfg = self._drqv2_config(self._p)
        self.get_logger().info(f'policy_node: {json.dumps(self._p)}; '
                               f'config {self.cfg.to_dict()}')
        self._worker = threading.Thread(target=self._train, name='drqv2', daemon=True)
        self._worker.start()

    def _train(self) -> None:
        log = self.get_logger()
        while not self._spec_ready.wait(1.0):
            if self._stop.is_set():
                return
            log.info(f'waiting for {C.REWARD_SPEC} before training',
                     throttle_duration_sec=10.0)
        # Episodes are published volatile: a monitor or alignment node that is still being
        # discovered would miss the first ones (after a resume, their metrics rows). Give the
        # subscribers of a run a moment to appear; a lone policy goes on after the wait.
        deadline = time.monotonic() + self._p['episode_subscriber_wait_s']
        while (self._pub_episode.get_subscription_count() == 0 and time.monotonic() < deadline
               and not self._stop.is_set()):
            time.sleep(0.05)
        with self._reward_lock:
            fn, version = self._reward_fn, self._reward_version
        callbacks = Callbacks(
            on_episode_end=self._publish_episode,
            on_eval=lambda r: self._publish_stats({'kind': 'eval', **r}),
            on_update=lambda s, m: self._publish_stats({'kind': 'update', 'env_step': s, **m}),
            should_stop=self._stop.is_set)
        try:
            self.trainer = Trainer(self.envs, self.cfg, fn, task=self._p['task'],
                                   callbacks=callbacks, reward_version=version,
                                   worker_names=[port.name for port in self.ports])
            with self._reward_lock:  # a spec may have arrived while the agent was built
                if self._reward_fn is not fn:
                    self.trainer.set_reward_fn(self._reward_fn, self._reward_version)
            ckpt = Path(self._p['run_dir']) / CHECKPOINT_NAME if self._p['run_dir'] else None
            if ckpt is not None and self._p['resume'] and ckpt.is_file():
                self.trainer.load(ckpt)
                log.info(f'resumed from {ckpt} at env step {self.trainer.env_step}')
            log.info(self.trainer.replay.memory_report())
            self.trainer.train()
            if ckpt is not None and not self._stop.is_set():
                self.trainer.save(ckpt)
            log.info(f'training done: {self.trainer.env_step} env steps, '
                     f'{self.trainer.update_count} updates')
            self._publish_stats({'kind': 'done', 'env_step': self.trainer.env_step,
                                 'aborted_episodes': self.trainer.aborted_episodes})
        except EnvStoppedError:
            log.info('training stopped (shutdown)')
        except Exception as exc:  # noqa: BLE001 - report, never kill the executor silently
            if self._stop.is_set() or not self.context.ok():
                # Ctrl-C: rclpy's signal handler invalidated the context under a publish;
                # close() still writes the checkpoint from the trainer's consistent state.
                return
            # Fatal: say why, write nothing over the run directory, end the process non-zero.
            log.fatal(f'training failed: {type(exc).__name__}: {exc}')
            self.exit_code = 1
            self._stop.set()
            rclpy.try_shutdown(context=self.context)

    def close(self) -> None:
        """Stop training and write a final checkpoint (Ctrl-C, or the embedded runner's end).

        The worker stops within one env step; the replay keeps the unfinished episode's
        complete n-step windows only, so the checkpoint is consistent and a resume starts a
        fresh episode from these counters.
        """
        self._stop.set()
        self._worker.join(timeout=30.0)
        trainer = getattr(self, 'trainer', None)
        if (self._worker.is_alive() or trainer is None or not self._p['run_dir']
                or self.exit_code):  # after a failure (an unreadable checkpoint): write nothing
            return
        path = Path(self._p['run_dir']) / CHECKPOINT_NAME
        trainer.save(path)
        self.get_logger().info(f'checkpoint at env step {trainer.env_step}: {path}')


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, num_threads=2, args=args)


if __name__ == '__main__':
    main()
