"""pybullet_bridge node: the PyBullet Panda scene behind exactly the robot contract.

Thin wrapper: parameters -> ``bridge_core.BridgeConfig``; messages <-> arrays with
``selfalign_core.contract_msgs``; stepping, command safety and timeouts in
``bridge_core.BridgeCore``.  Topic names are the contract's (``selfalign_core.contract``),
resolved relative to the node namespace, so ``__ns:=/robot1`` moves the whole contract
(docs/design.md "Robot contract").

Modes: ``lockstep`` (default) — every twist advances exactly one control period, then every
state topic goes out once with the same stamp (= sim time, also on /clock); the gripper command is
latched and applied with the next twist (send it before the twist).  ``realtime`` — a wall-clock
timer at control_rate_hz steps with the latest twist; a twist older than command_timeout_s is
replaced by zero velocity (the arm holds).

In-process link (``link``; the embedded ``selfalign train`` uses it): a client in the same
process steps the lockstep bridge by calling the function ``link`` returns, with the same two
command messages it publishes, and gets the state messages back at once. Every state topic is
still published (monitor, reward, recording); the bridge stops taking commands from its topics,
so each command steps the simulator once. Saves the lockstep round trip through DDS (two
thread wake-ups, serialising and taking six messages a step).

Parameters:
    task (string, 'touch'): task scene (touch | grasp_lift | push).
    mode (string, 'lockstep'): lockstep | realtime.
    control_rate_hz (double, 10.0): control rate; sim time per step = 1 / rate.
    command_timeout_s (double, 0.5): realtime: twist older than this -> arm holds.
    publish_clock (bool, true): publish sim time on /clock (only one bridge of a run with
        several arms does).
    publish_camera (bool, false): publish camera/image_raw + camera/camera_info each step.
    image_size_px (int, 84): side of the square camera image.
    video_width_px, video_height_px (int, 320, 240): frames of a second, viewer camera (a
        three-quarter view of arm, table, block and goal) published on camera/video/image_raw
        for every state of an episode whose ResetEpisode request sets render_video (evaluation
        videos; ~30 ms a frame, so only those episodes pay for it); width 0 = none.
    key_frame_every_steps (int, 0): also a video frame at the reset and every N steps of every
        episode: key frames policy_node attaches to Episode for a vision LLM; 0 = none.
    seed (int, 0): seed of the first episode; resets with seed < 0 continue the sequence.
    ee_workspace_low_m / ee_workspace_high_m (double[3]): EE box, base frame, m.
    max_ee_speed_mps (double, 0.3): EE speed cap (norm).
    gripper_max_width_m (double, 0.08): largest commanded finger width.
    randomize (bool, false): domain randomisation per episode (sim/randomization.py): dynamics
        and camera in the world; sensing noise, dropped object poses and image changes on what
        is published (never on the simulator's state); action noise, latency and period jitter
        on the commands in lockstep.
    randomization_file (string, ''): YAML of the ranges ('' = config/domain_randomization.yaml).
    rehearsal_latency_s, rehearsal_latency_jitter_s (double, 0.0), rehearsal_period_jitter
        (double, 0.0), rehearsal_drop_prob (double, 0.0): realtime mode only — injected command
        latency (+ U(0, jitter)), tick-period jitter and lost twists (rehearsal.py); all 0 keeps
        the plain realtime path.

Subscribes:
    servo_node/delta_twist_cmds (geometry_msgs/TwistStamped): EE linear velocity m/s, base frame.
    gripper_controller/commands (std_msgs/Float64MultiArray): data[0] = finger width m.
    selfalign/reset_episode (service, selfalign_interfaces/srv/ResetEpisode): seed in, stamped
        initial state out (also published on the state topics).

Publishes:
    joint_states (sensor_msgs/JointState): 7 arm + 2 finger joints; finger effort = pad force N.
    ee_pose (geometry_msgs/PoseStamped): fingertip centre, base_link.
    ee_wrench (geometry_msgs/WrenchStamped): fingertip contact force, base_link.
    object_pose (geometry_msgs/PoseStamped): block centre, base_link.
    camera/image_raw (sensor_msgs/Image, rgb8), camera/camera_info (only with publish_camera).
    camera/video/image_raw (sensor_msgs/Image, rgb8): viewer-camera frames of filmed episodes,
        stamped like the state they show and published just before it.
    clock (rosgraph_msgs/Clock): sim time.
    selfalign/goal_pose (geometry_msgs/PoseStamped, transient local): goal of the episode.

"""

from __future__ import annotations

from collections.abc import Callable
import threading
import time
from typing import Any

from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray

from selfalign_bringup.bridge_core import (
    BridgeConfig,
    BridgeCore,
    fingertip_wrench,
    MODES,
    SHARED_PARAMETERS,
    Stepped,
    with_overrides,
)
from selfalign_bringup.rehearsal import CommandTimeline
from selfalign_core import contract as C
from selfalign_core import contract_msgs as M
from selfalign_core.executors import run_node
from selfalign_core.qos import LATCHED, RELIABLE
from selfalign_core.tasks import TASKS
from selfalign_interfaces.srv import ResetEpisode

_NO_EVENTS = PublisherEventCallbacks(use_default_callbacks=False)


def _frange(lo: float, hi: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]


class PyBulletBridge(Node):
    """The sim side of the robot contract; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('pybullet_bridge', **kwargs)
        self.cfg = self._declare_parameters()
        # Imported here so that `--help`-style failures on parameters do not pay for pybullet.
        from selfalign_bringup.sim import PandaWorld, SimConfig

        self._world = PandaWorld(with_overrides(SimConfig(), self.cfg.sim_overrides()))
        self._core = BridgeCore(self._world, self.cfg)
        self._init_sim2real()
        self._joint_names = list(self._world.joint_names)
        self._camera_info = (self._world.camera_info(self.cfg.image_size_px)
                             if self.cfg.publish_camera else None)

        # State publishers skip rclpy's default QoS-event handlers: one waitable less each in
        # every executor wait (lockstep speed); a mismatched subscriber still warns on its side.
        state = (RELIABLE, _NO_EVENTS)
        self._pub_joints = self._state_pub(JointState, C.JOINT_STATES, *state)
        self._pub_ee = self._state_pub(PoseStamped, C.EE_POSE, *state)
        self._pub_wrench = self._state_pub(WrenchStamped, C.EE_WRENCH, *state)
        self._pub_object = self._state_pub(PoseStamped, C.OBJECT_POSE, *state)
        self._pub_clock = (self._state_pub(Clock, C.CLOCK, *state) if self.cfg.publish_clock
                           else None)
        self._pub_goal = self.create_publisher(PoseStamped, C.GOAL_POSE, LATCHED)
        if self.cfg.publish_camera:
            self._pub_image = self.create_publisher(Image, C.CAMERA_IMAGE, RELIABLE)
            self._pub_info = self.create_publisher(CameraInfo, C.CAMERA_INFO, RELIABLE)
        self._film = False  # this episode's states are filmed on camera/video/image_raw
        if self.cfg.video_width_px:
            self._pub_video = self.create_publisher(Image, C.VIDEO_IMAGE, RELIABLE)
        # Gripper first: when both commands are waiting, the executor takes them in creation
        # order, so a gripper command sent just before a twist is applied with that twist.
        self.command_subscriptions = [
            (self.create_subscription(Float64MultiArray, C.GRIPPER_CMD,
                                      self._on_gripper, RELIABLE), self._on_gripper),
            (self.create_subscription(TwistStamped, C.TWIST_CMD, self._on_twist,
                                      RELIABLE), self._on_twist)]
        self.create_service(ResetEpisode, C.RESET_EPISODE, self._on_reset)
        if not self._core.lockstep:
            # Wall (steady) clock: with use_sim_time the node clock would follow our own /clock,
            # which only advances when this timer fires.
            self._timer = self.create_timer(self.cfg.control_period_s, self._on_tick,
                                            clock=RosClock(clock_type=ClockType.STEADY_TIME))
        self._had_twist = False
        #: called with each /clock message as it is published (the embedded run's clocks)
        self.clock_listeners: list[Callable[[Clock], None]] = []
        #: serialises a linked client's steps (its thread) with resets (the bridge's thread)
        self._step_lock = threading.Lock()

        self._publish(self._reset_episode(self.cfg.seed), goal=True)
        self.get_logger().info(f'pybullet_bridge ready: {self.cfg}')

    def _state_pub(self, msg_type: type, contract_name: str, qos: QoSProfile,
                   events: PublisherEventCallbacks):
        return self.create_publisher(msg_type, contract_name, qos, event_callbacks=events)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> BridgeConfig:
        d = BridgeConfig()
        str_t, dbl, integer = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE,
                               ParameterType.PARAMETER_INTEGER)
        specs = [
            ('task', d.task, ParameterDescriptor(
                type=str_t, description=f'task scene, one of {sorted(TASKS)}', read_only=True)),
            ('mode', d.mode, ParameterDescriptor(
                type=str_t, read_only=True, description=f'stepping mode, one of {MODES}: '
                'lockstep = one control period per twist; realtime = timer, latest command')),
            ('control_rate_hz', d.control_rate_hz, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(1.0, 1000.0),
                description='control rate, Hz; sim time per step = 1 / rate')),
            ('command_timeout_s', d.command_timeout_s, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(0.001, 10.0),
                description='realtime mode: a twist older than this is stale, the arm holds')),
            ('publish_clock', d.publish_clock, ParameterDescriptor(
                type=ParameterType.PARAMETER_BOOL, read_only=True,
                description='publish sim time on /clock (one bridge per run does)')),
            ('publish_camera', d.publish_camera, ParameterDescriptor(
                type=ParameterType.PARAMETER_BOOL, read_only=True,
                description='render and publish camera/image_raw + camera_info every step')),
            ('image_size_px', d.image_size_px, ParameterDescriptor(
                type=integer, read_only=True, description='side of the square image, px',
                integer_range=[IntegerRange(from_value=16, to_value=1024, step=1)])),
            ('video_width_px', d.video_width_px, ParameterDescriptor(
                type=integer, read_only=True, description='width of camera/video/image_raw '
                'frames, px (rendered only for episodes reset with render_video); 0 = none',
                integer_range=[IntegerRange(from_value=0, to_value=1920, step=1)])),
            ('video_height_px', d.video_height_px, ParameterDescriptor(
                type=integer, read_only=True, description='height of the video frames, px',
                integer_range=[IntegerRange(from_value=48, to_value=1080, step=1)])),
            ('key_frame_every_steps', d.key_frame_every_steps, ParameterDescriptor(
                type=integer, read_only=True, description='also publish a video frame at the '
                'reset and every N steps of every episode (key frames); 0 = filmed only',
                integer_range=[IntegerRange(from_value=0, to_value=100000, step=1)])),
            ('seed', d.seed, ParameterDescriptor(
                type=integer, read_only=True,
                description='seed of the first episode; resets with seed < 0 continue it')),
            ('ee_workspace_low_m', list(d.ee_workspace_low_m), ParameterDescriptor(
                type=ParameterType.PARAMETER_DOUBLE_ARRAY, read_only=True,
                description='lower corner (x, y, z) of the EE box, base frame, m')),
            ('ee_workspace_high_m', list(d.ee_workspace_high_m), ParameterDescriptor(
                type=ParameterType.PARAMETER_DOUBLE_ARRAY, read_only=True,
                description='upper corner (x, y, z) of the EE box, base frame, m')),
            ('max_ee_speed_mps', d.max_ee_speed_mps, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(0.001, 2.0),
                description='EE speed cap (norm), m/s; faster commands are scaled down')),
            ('gripper_max_width_m', d.gripper_max_width_m, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(0.001, 0.2),
                description='largest finger width a gripper command may ask for, m')),
            ('randomize', d.randomize, ParameterDescriptor(
                type=ParameterType.PARAMETER_BOOL, read_only=True,
                description='domain randomisation per episode (dynamics, sensing noise on the '
                'published state, camera, actuation); ranges from randomization_file')),
            ('randomization_file', d.randomization_file, ParameterDescriptor(
                type=str_t, read_only=True, description="YAML of the randomisation ranges "
                "('' = the installed config/domain_randomization.yaml)")),
            ('rehearsal_latency_s', d.rehearsal_latency_s, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(0.0, 5.0),
                description='realtime rehearsal: injected command latency, s')),
            ('rehearsal_latency_jitter_s', d.rehearsal_latency_jitter_s, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(0.0, 5.0),
                description='realtime rehearsal: extra latency U(0, this) per command, s')),
            ('rehearsal_period_jitter', d.rehearsal_period_jitter, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(0.0, 0.49),
                description='realtime rehearsal: tick period x (1 + U(-j, j))')),
            ('rehearsal_drop_prob', d.rehearsal_drop_prob, ParameterDescriptor(
                type=dbl, read_only=True, floating_point_range=_frange(0.0, 0.99),
                description='realtime rehearsal: probability that a twist is lost')),
        ]
        values = {}
        for name, default, desc in specs:
            values[name] = self.declare_parameter(name, default, desc).value
        given = set(getattr(self, '_parameter_overrides', {}) or {})
        unknown = sorted(given - set(values) - SHARED_PARAMETERS
                         - {'qos_overrides', 'start_type_description_service'})
        unknown = [u for u in unknown if not u.startswith('qos_overrides.')]
        if unknown:  # a typo would otherwise be ignored and its default used
            raise ValueError(f'unknown pybullet_bridge parameter(s) {unknown}; valid: '
                             f'{sorted(values)} (and the shared /** keys '
                             f'{sorted(SHARED_PARAMETERS)})')
        return BridgeConfig.from_dict(values)

    # ------------------------------------------------------------------ sim-to-real
    def _init_sim2real(self) -> None:
        """Domain randomisation and the real-time rehearsal (both off by default)."""
        self._rand_cfg = None
        self._sensor = None
        self._actuation = None
        self._timeline = None
        if self.cfg.randomize:
            from selfalign_bringup.sim.randomization import RandomizationConfig
            from selfalign_bringup.wiring import config_dir

            path = self.cfg.randomization_file or str(config_dir() / 'domain_randomization.yaml')
            try:
                cfg = RandomizationConfig.from_yaml(path, self.cfg.task)
            except Exception as exc:  # noqa: BLE001 - missing file, bad YAML, bad ranges
                raise ValueError(f'randomization_file {path!r} cannot be used ({exc}); pass a '
                                 'YAML shaped like config/domain_randomization.yaml') from None
            self._rand_cfg = RandomizationConfig(**{**cfg.__dict__, 'enabled': True})
        rehearsal = self.cfg.rehearsal()
        if rehearsal.active:
            self._timeline = CommandTimeline(rehearsal, self.cfg.control_period_s,
                                             self.cfg.gripper_max_width_m)
            self._grip_pending = float(self.cfg.gripper_max_width_m)
            self._last_tick_s = time.monotonic()

    def _reset_episode(self, seed: int) -> Stepped:
        """core.reset, then this episode's randomisation (dynamics, camera, noise models)."""
        stepped = self._core.reset(seed)
        if self._timeline is not None:
            self._timeline.reset(self.cfg.gripper_max_width_m)
            self._grip_pending = float(self.cfg.gripper_max_width_m)
        if self._rand_cfg is not None:
            from selfalign_bringup.sim.randomization import (
                ActuationModel,
                apply_to_world,
                episode_rng,
                sample_episode,
                SensorModel,
            )

            seed = self._core.episode_seed
            rng = episode_rng(seed)
            ep = sample_episode(self._rand_cfg, seed, self._world.cfg, rng)
            apply_to_world(self._world, ep)
            self._sensor = SensorModel(ep, self.cfg.control_period_s, rng)
            self._actuation = ActuationModel(ep, self.cfg.control_period_s,
                                             self.cfg.max_ee_speed_mps,
                                             self.cfg.gripper_max_width_m, rng)
        return stepped

    # ------------------------------------------------------------------ in-process link
    def link_refusal(self) -> str:
        """Why ``link`` would refuse this bridge ('' if it would not)."""
        if not self._core.lockstep or self._timeline is not None:
            return (f'mode={self.cfg.mode!r}; an in-process link steps a lockstep bridge '
                    '(mode:=lockstep, no rehearsal_*)')
        return ''

    def link(self) -> Callable[[Float64MultiArray, TwistStamped], dict[str, Any]]:
        """Step this bridge from a client in the same process (module docstring): returns
        ``step(gripper_msg, twist_msg) -> state messages by kind`` (``_publish``'s dict).

        Lockstep without rehearsal only; call before the bridge is spun (``spin_lockstep``
        reads ``command_subscriptions`` once). The command subscriptions are destroyed: a
        command that also arrived over DDS would step the simulator a second time.
        """
        why = self.link_refusal()
        if why:
            raise ValueError(f'link: {why}')
        for sub, _ in self.command_subscriptions:
            self.destroy_subscription(sub)
        self.command_subscriptions = []
        return self._linked_step

    def _linked_step(self, gripper: Float64MultiArray, twist: TwistStamped) -> dict[str, Any]:
        with self._step_lock:
            self._on_gripper(gripper)
            return self._on_twist(twist) or {}

    # ------------------------------------------------------------------ callbacks
    def _on_gripper(self, msg: Float64MultiArray) -> None:
        try:
            width = M.gripper_width(msg)
            if self._timeline is not None:  # travels with the next twist, with its latency
                self._grip_pending = self._core.safety.width(width)
                return
            self._core.on_gripper(width)
        except ValueError as e:
            self.get_logger().warn(f'ignored gripper command: {e}', throttle_duration_sec=2.0)

    def _on_twist(self, msg: TwistStamped) -> dict[str, Any] | None:
        try:
            v = M.twist_linear(msg)
        except ValueError as e:
            self.get_logger().warn(f'refused twist: {e}; holding the arm',
                                   throttle_duration_sec=2.0)
            if not self._core.lockstep or self._timeline is not None:
                return None  # real time: the timer holds the arm once commands go stale
            v = np.zeros(3)  # lockstep: a step at rest, so the client still gets its state
        self._had_twist = True
        if self._timeline is not None:
            self._timeline.add(v, self._grip_pending, time.monotonic())
            return None
        if self._actuation is not None and self._core.lockstep:
            v, width = self._actuation.command(v, self._core.finger_width_command_m)
            self._core.on_gripper(width)
        stepped = self._core.on_twist(v, time.monotonic())
        return None if stepped is None else self._publish(stepped)

    def _on_tick(self) -> None:
        now = time.monotonic()
        if self._timeline is not None:
            # Rehearsal: what acted over the last (jittered) wall period, latency included.
            v, width, effective_s = self._timeline.integrate(self._last_tick_s, now)
            self._last_tick_s = now
            self._core.on_gripper(width)
            if effective_s is not None:
                self._core.on_twist(v, effective_s)
            self._timer.timer_period_ns = int(self._timeline.next_period_s() * 1e9)
        stepped = self._core.tick(now)
        if stepped is not None:
            if stepped.stale and self._had_twist:
                self.get_logger().warn(
                    f'no twist for > command_timeout_s={self.cfg.command_timeout_s} s: '
                    'holding the arm (zero velocity)', throttle_duration_sec=2.0)
            self._publish(stepped)

    def _on_reset(self, request: ResetEpisode.Request,
                  response: ResetEpisode.Response) -> ResetEpisode.Response:
        with self._step_lock:
            try:
                self._film = bool(request.render_video) and bool(self.cfg.video_width_px)
                stepped = self._reset_episode(int(request.seed))
            except Exception as e:  # noqa: BLE001 - report the failure, keep running
                response.success = False
                response.message = f'reset failed: {e}'
                self.get_logger().error(response.message)
                return response
            msgs = self._publish(stepped, goal=True)
        response.success = True
        response.message = f'episode {self._core.episodes} seed {self._core.episode_seed}'
        response.seed = self._core.episode_seed
        response.joint_state, response.ee_pose = msgs['joint_states'], msgs['ee_pose']
        response.ee_wrench, response.goal_pose = msgs['ee_wrench'], msgs['goal']
        response.object_pose = msgs['object_pose']  # a reset's pose is always fresh
        response.block_rest_z = float(stepped.result.block_rest_z)
        self.get_logger().debug(f'first state of {response.message} published')
        return response

    # ------------------------------------------------------------------ publishing
    def _publish(self, s: Stepped, goal: bool = False) -> dict[str, Any]:
        """Publish every state topic once with the step's stamp; returns the state messages
        published, by kind (``joint_states``, ``ee_pose``, ``ee_wrench``, ``object_pose`` unless
        the tracker dropped it, ``goal`` on a reset, ``image`` with the camera)."""
        r, stamp = s.result, M.ns_to_stamp(s.stamp_ns)
        raw = r.raw
        q, qd, tau = r.joint_positions, r.joint_velocities, r.joint_efforts
        object_fresh = True
        if self._sensor is not None:  # what a real driver would report (sim state untouched)
            raw, object_fresh = self._sensor.perturb_raw(raw, reset=goal)
            q, qd, tau = self._sensor.perturb_joints(q, qd, tau)
        joints = M.joint_state_msg(self._joint_names, q, qd, tau, stamp)
        ee = M.pose_msg(raw['ee_pos'], raw['ee_quat'], stamp)
        force, torque = fingertip_wrench(raw)
        wrench = M.wrench_msg(force, torque, stamp)
        obj = M.pose_msg(raw['block_pos'], raw['block_quat'], stamp)
        out: dict[str, Any] = {'joint_states': joints, 'ee_pose': ee, 'ee_wrench': wrench}
        if goal:
            out['goal'] = M.pose_msg(raw['goal_pos'], np.array([0.0, 0.0, 0.0, 1.0]), stamp)
            self._pub_goal.publish(out['goal'])
        if self._camera_info is not None:
            info = self._camera_info
            rgb = self._world.render_rgb(self.cfg.image_size_px)
            if self._sensor is not None:
                rgb = self._sensor.image(rgb)
            out['image'] = M.image_msg(rgb, stamp, info['frame_id'])
            self._pub_image.publish(out['image'])
            self._pub_info.publish(M.camera_info_msg(info['width'], info['height'], info['K'],
                                                     stamp, info['frame_id']))
        every = self.cfg.key_frame_every_steps
        key = bool(every) and self._core.steps_in_episode % every == 0
        if self._film or key:  # before the state: a client that has the state has its frame
            rgb = self._world.render_video(self.cfg.video_width_px, self.cfg.video_height_px)
            self._pub_video.publish(M.image_msg(rgb, stamp, 'video_camera_optical_frame'))
        self._pub_joints.publish(joints)
        self._pub_ee.publish(ee)
        self._pub_wrench.publish(wrench)
        if object_fresh:  # a dropped tracker message: the last one stays the latest
            self._pub_object.publish(obj)
            out['object_pose'] = obj
        if self._pub_clock is not None:
            clock = Clock(clock=stamp)
            self._pub_clock.publish(clock)
            for listener in self.clock_listeners:
                listener(clock)
        return out

    def destroy_node(self) -> None:
        self._world.close()
        super().destroy_node()


def spin_lockstep(node: PyBulletBridge, executor: SingleThreadedExecutor,
                  stop: threading.Event | None = None) -> None:
    """Lockstep hot path: one rcl wait set over the two command subscriptions and the services.

    Commands run their callbacks directly (gripper first), skipping the executor, which rebuilds
    its wait set over every entity of the node for each message (~1 ms of Python per step on a
    small CPU); a ready service (reset, parameters) is handed to ``executor.spin_once``.
    """
    ctx = node.context
    subs = node.command_subscriptions
    services = list(node.services)
    ws = _rclpy.WaitSet(len(subs), 0, 0, 0, len(services), 0, ctx.handle)
    while ctx.ok() and not (stop is not None and stop.is_set()):
        ws.clear_entities()
        for sub, _ in subs:
            ws.add_subscription(sub.handle)
        for srv in services:
            ws.add_service(srv.handle)
        ws.wait(100_000_000)  # 0.1 s: also the latency of noticing shutdown
        for sub, callback in subs:
            while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
                callback(taken[0])
        for _ in ws.get_ready_entities('service'):
            executor.spin_once(timeout_sec=0.0)


def spin_bridge(node: PyBulletBridge, executor: SingleThreadedExecutor,
                stop: threading.Event | None = None) -> None:
    """The bridge's own spin (``main``; a thread of the embedded run): lockstep's wait set,
    or ``executor`` (the node added) in realtime mode, until shutdown or ``stop``."""
    if node.cfg.mode == 'lockstep':
        spin_lockstep(node, executor, stop)
        return
    while executor.context.ok() and not (stop is not None and stop.is_set()):
        executor.spin_once(timeout_sec=0.1)


def _spin(node: PyBulletBridge, executor: SingleThreadedExecutor) -> None:
    if node.cfg.mode == 'lockstep':
        spin_lockstep(node, executor)
    else:
        executor.spin()


def main(args: list[str] | None = None) -> None:
    run_node(PyBulletBridge, args=args, spin=_spin)

if __name__ == '__main__':
    main()
