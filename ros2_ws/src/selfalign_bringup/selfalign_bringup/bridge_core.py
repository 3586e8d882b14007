"""Pure logic of the PyBullet bridge: configuration, command safety, lockstep/real-time stepping.

No rclpy here; ``pybullet_bridge.py`` only converts messages and calls ``BridgeCore``.

* ``BridgeConfig`` — the node's parameters, validated (a ``ValueError`` names the parameter
  and the fix), mapped onto ``sim.SimConfig``.
* ``CommandSafety`` — what the bridge enforces on every command before the world sees it (on
  hardware these are the safety layer): non-finite -> zero, speed cap (norm), workspace box
  (no velocity component that would carry the EE further out of the box), finger width in
  [0, gripper_max_width_m].
* ``BridgeCore`` — owns the world and a monotonic sim clock in integer nanoseconds (it keeps
  running across episode resets, so ``/clock`` never jumps back).  Lockstep mode: each twist
  advances exactly one control period; the gripper command is latched and applied with the next
  twist.  Real-time mode: ``tick`` (a timer at control_rate_hz) steps with the latest twist, or
  with zero velocity when that twist is older than ``command_timeout_s`` (arm holds).

The world is duck-typed (``sim.PandaWorld``): ``reset(seed) -> StepResult``,
``step(ee_velocity_mps (3,), finger_width_m) -> StepResult``, ``close()``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
import math
from typing import Any, NamedTuple, Protocol

import numpy as np

from selfalign_bringup.rehearsal import RehearsalConfig
from selfalign_core.contract import ActionScale
from selfalign_core.tasks import TASKS

MODES = ('lockstep', 'realtime')
_NS = 1_000_000_000
_SCALE = ActionScale()


#: Parameters a selfalign configuration's shared '/**' block may hold (every node receives
#: them; each uses the ones it knows). Any other parameter given to the bridge is an error.
SHARED_PARAMETERS = frozenset({'use_sim_time', 'task', 'seed', 'run_dir', 'resume',
                               'namespace', 'videos_per_eval', 'llm_call_deadline_s'})


@dataclass(frozen=True)
class BridgeConfig:
    """Parameters of the bridge node (ROS parameter name == field name)."""

    task: str = 'touch'
    """Task scene to build (selfalign_core.tasks.TASKS)."""
    mode: str = 'lockstep'
    """'lockstep': each twist command advances one control period (sim default);
    'realtime': a timer at control_rate_hz steps with the latest command (hardware mode)."""
    control_rate_hz: float = 1.0 / _SCALE.control_period_s
    """Control rate; one control period of sim time = 1 / control_rate_hz."""
    command_timeout_s: float = 0.5
    """Real-time mode: a twist older than this is stale and the arm holds (zero velocity)."""
    publish_clock: bool = True
    """Publish sim time on /clock (absolute). With several bridges in one run (workers:=N)
    only the first does: ROS has one clock per domain."""
    publish_camera: bool = False
    """Render and publish /camera/image_raw and /camera/camera_info each step."""
    image_size_px: int = 84
    """Side of the square camera image, px."""
    video_width_px: int = 320
    """Width of the video camera's frames (camera/video/image_raw), px; 0 = no video camera.
    Frames are rendered only for episodes whose ResetEpisode request sets render_video."""
    video_height_px: int = 240
    """Height of the video camera's frames, px."""
    key_frame_every_steps: int = 0
    """Also publish a video-camera frame at the reset and every this many steps of *every*
    episode (key frames for a vision LLM, ~30 ms each); 0 = only filmed episodes."""
    seed: int = 0
    """Seed of the first episode; resets with seed < 0 continue seed + 1, seed + 2, ..."""
    ee_workspace_low_m: tuple[float, float, float] = (0.30, -0.30, 0.015)
    """Lower corner of the box the EE (fingertip centre) may move in, base frame, m."""
    ee_workspace_high_m: tuple[float, float, float] = (0.75, 0.30, 0.40)
    """Upper corner of the EE box, base frame, m."""
    max_ee_speed_mps: float = _SCALE.max_speed_mps
    """Cap on the commanded EE speed (norm), m/s; faster commands are scaled down."""
    gripper_max_width_m: float = _SCALE.gripper_open_m
    """Largest finger width a gripper command may ask for, m."""
    randomize: bool = False
    """Domain randomisation per episode (sim.randomization; sensing noise on what is published)."""
    randomization_file: str = ''
    """YAML with the ranges ('' = the installed config/domain_randomization.yaml)."""
    rehearsal_latency_s: float = 0.0
    """Real-time rehearsal: command latency, s (rehearsal.CommandTimeline)."""
    rehearsal_latency_jitter_s: float = 0.0
    """Real-time rehearsal: extra latency U(0, this) per command, s."""
    rehearsal_period_jitter: float = 0.0
    """Real-time rehearsal: tick period nominal * (1 + U(-j, j))."""
    rehearsal_drop_prob: float = 0.0
    """Real-time rehearsal: probability that a twist command is lost."""

    def __post_init__(self) -> None:
        _check(self)

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    def rehearsal(self) -> RehearsalConfig:
        """The injected timing faults (inactive unless a rehearsal_* parameter is set)."""
        return RehearsalConfig(latency_s=self.rehearsal_latency_s,
                               latency_jitter_s=self.rehearsal_latency_jitter_s,
                               period_jitter=self.rehearsal_period_jitter,
                               drop_prob=self.rehearsal_drop_prob, seed=self.seed)

    @property
    def control_period_ns(self) -> int:
        return round(_NS / self.control_rate_hz)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BridgeConfig:
        """Build from parameter values; unknown names raise a ValueError listing valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f'unknown bridge parameter(s) {unknown}; valid: {sorted(names)}')
        kw = {k: tuple(float(x) for x in v) if isinstance(getattr(cls, k), tuple) else v
              for k, v in d.items()}
        return cls(**kw)

    def sim_overrides(self) -> dict[str, Any]:
        """The SimConfig fields this config sets (same numbers, enforced twice on purpose)."""
        return {
            'control_period_s': self.control_period_s,
            'ee_workspace_low_m': tuple(self.ee_workspace_low_m),
            'ee_workspace_high_m': tuple(self.ee_workspace_high_m),
            'max_ee_speed_mps': self.max_ee_speed_mps,
            'image_size_px': self.image_size_px,
        }


def _check(c: BridgeConfig) -> None:
    def fail(name: str, why: str) -> None:
        raise ValueError(f'parameter {name}={getattr(c, name)!r}: {why}')

    if c.task not in TASKS:
        fail('task', f'choose one of {sorted(TASKS)}')
    if c.mode not in MODES:
        fail('mode', f'choose one of {MODES}')
    if not (math.isfinite(c.control_rate_hz) and 1.0 <= c.control_rate_hz <= 1000.0):
        fail('control_rate_hz', 'must be in [1, 1000] Hz (the tasks are set up for 10 Hz)')
    if not (math.isfinite(c.command_timeout_s) and 0.0 < c.command_timeout_s <= 10.0):
        fail('command_timeout_s', 'must be in (0, 10] s')
    if c.mode == 'realtime' and c.command_timeout_s < 1.0 / c.control_rate_hz:
        fail('command_timeout_s', f'must be >= one control period ({1.0 / c.control_rate_hz} s) '
             'in realtime mode, or every command is stale')
    if not 16 <= int(c.image_size_px) <= 1024:
        fail('image_size_px', 'must be in [16, 1024] (84 for DrQ-v2)')
    if int(c.video_width_px) != 0 and not (
            64 <= int(c.video_width_px) <= 1920 and 48 <= int(c.video_height_px) <= 1080):
        fail('video_width_px', f'video frames must be 64..1920 x 48..1080 px (got '
             f'{c.video_width_px} x {c.video_height_px}); 0 turns the video camera off')
    if int(c.key_frame_every_steps) < 0 or (c.key_frame_every_steps and not c.video_width_px):
        fail('key_frame_every_steps', 'must be >= 0, and key frames need the video camera '
             '(video_width_px > 0)')
    if not (math.isfinite(c.max_ee_speed_mps) and 0.0 < c.max_ee_speed_mps <= 2.0):
        fail('max_ee_speed_mps', 'must be in (0, 2] m/s')
    if not (math.isfinite(c.gripper_max_width_m) and 0.0 < c.gripper_max_width_m <= 0.2):
        fail('gripper_max_width_m', 'must be in (0, 0.2] m (Panda: 0.08)')
    for name in ('ee_workspace_low_m', 'ee_workspace_high_m'):
        v = getattr(c, name)
        if len(v) != 3 or not all(math.isfinite(x) for x in v):
            fail(name, 'must be 3 finite numbers (x, y, z) in m, base frame')
    if any(lo >= hi for lo, hi in zip(c.ee_workspace_low_m, c.ee_workspace_high_m)):
        fail('ee_workspace_low_m', f'must be < ee_workspace_high_m={c.ee_workspace_high_m} '
             'component-wise (swapped?)')
    try:
        rehearsal = c.rehearsal()
    except ValueError as exc:
        raise ValueError(f'parameter {str(exc).replace("rehearsal ", "rehearsal_", 1)}') from None
    if rehearsal.active and c.mode != 'realtime':
        fail('mode', 'rehearsal_* faults are wall-clock: use mode realtime (lockstep latency is '
             'domain randomisation: randomize true)')


class CommandSafety:
    """Clamps commands to the configured speed, workspace and gripper limits."""

    def __init__(self, cfg: BridgeConfig) -> None:
        self.low = np.asarray(cfg.ee_workspace_low_m, dtype=np.float64)
        self.high = np.asarray(cfg.ee_workspace_high_m, dtype=np.float64)
        self.max_speed = float(cfg.max_ee_speed_mps)
        self.max_width = float(cfg.gripper_max_width_m)
        self.dt = cfg.control_period_s

    def velocity(self, v_mps: np.ndarray, ee_pos_m: np.ndarray | None) -> np.ndarray:
        """Commanded EE velocity (3,) m/s -> safe velocity (3,) m/s.

        With ``ee_pos_m`` (3,) known, each component is limited so that one control period
        does not carry the EE beyond the box, and never further out when it already is outside.
        """
        v = np.asarray(v_mps, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(v)):
            return np.zeros(3)
        speed = float(np.linalg.norm(v))
        if speed > self.max_speed:
            v = v * (self.max_speed / speed)
        if ee_pos_m is not None:
            p = np.asarray(ee_pos_m, dtype=np.float64).reshape(3)
            lo = np.minimum((self.low - p) / self.dt, 0.0)
            hi = np.maximum((self.high - p) / self.dt, 0.0)
            v = np.clip(v, lo, hi)
        return v

    def width(self, width_m: float) -> float:
        """Finger width m -> clipped to [0, gripper_max_width_m]; NaN raises ValueError."""
        w = float(width_m)
        if not math.isfinite(w):
            raise ValueError(f'gripper width is not finite ({w}); send a width in m')
        return min(max(w, 0.0), self.max_width)


class World(Protocol):
    """What BridgeCore needs from ``sim.PandaWorld``."""

    def reset(self, seed: int) -> Any: ...

    def step(self, ee_velocity_mps: np.ndarray, finger_width_m: float) -> Any: ...


class Stepped(NamedTuple):
    """One world update: the StepResult, its stamp and what was applied."""

    result: Any
    """sim.StepResult (raw dict, joint arrays, block_rest_z, sim_time_s)."""
    stamp_ns: int
    """Bridge sim clock (monotonic over the whole run), integer ns."""
    velocity_mps: np.ndarray
    """(3,) EE velocity actually applied (after safety and timeout)."""
    finger_width_m: float
    """Finger width actually commanded."""
    stale: bool
    """True when a real-time step held the arm because the last twist was stale (or none came)."""


class BridgeCore:
    """Owns the world, the latched commands and the sim clock; see the module docstring."""

    def __init__(self, world: World, cfg: BridgeConfig) -> None:
        self.world = world
        self.cfg = cfg
        self.safety = CommandSafety(cfg)
        self.period_ns = cfg.control_period_ns
        self.stamp_ns = 0
        self.episode_seed = cfg.seed
        self.episodes = 0
        self.steps_in_episode = 0
        self.last: Stepped | None = None
        self._twist = np.zeros(3)
        self._twist_time_s: float | None = None
        self._width = float(cfg.gripper_max_width_m)

    @property
    def lockstep(self) -> bool:
        return self.cfg.mode == 'lockstep'

    @property
    def finger_width_command_m(self) -> float:
        """The latched gripper command, m."""
        return self._width

    def reset(self, seed: int = -1) -> Stepped:
        """New episode. ``seed < 0``: the next seed of the bridge's own sequence.

        Advances the clock by one period (so the initial state has a stamp of its own) and
        clears the latched twist (the gripper command stays latched).
        """
        if seed < 0:
            seed = self.cfg.seed + self.episodes
        self.episode_seed = int(seed)
        self.episodes += 1
        self.steps_in_episode = 0
        self._twist = np.zeros(3)
        self._twist_time_s = None
        self._width = float(self.cfg.gripper_max_width_m)
        result = self.world.reset(seed=self.episode_seed)
        self.stamp_ns += self.period_ns
        self.last = Stepped(result, self.stamp_ns, np.zeros(3), self._width, False)
        return self.last

    def on_gripper(self, width_m: float) -> None:
        """Latch a gripper command (applied with the next step)."""
        self._width = self.safety.width(width_m)

    def on_twist(self, velocity_mps: np.ndarray, now_s: float) -> Stepped | None:
        """Take a twist. Lockstep: step now and return the step. Real time: latch, return None."""
        v = np.asarray(velocity_mps, dtype=np.float64).reshape(3)
        if self.lockstep:
            return self._step(v, stale=False)
        self._twist = v.copy()
        self._twist_time_s = float(now_s)
        return None

    def is_stale(self, now_s: float) -> bool:
        """True when no twist arrived within command_timeout_s before ``now_s`` (real time)."""
        return (self._twist_time_s is None
                or now_s - self._twist_time_s > self.cfg.command_timeout_s)

    def tick(self, now_s: float) -> Stepped | None:
        """Real-time timer: step with the latest twist or hold (zero) if stale; lockstep: None."""
        if self.lockstep:
            return None
        stale = self.is_stale(now_s)
        return self._step(np.zeros(3) if stale else self._twist, stale=stale)

    def _step(self, v: np.ndarray, stale: bool) -> Stepped:
        if self.last is None:
            raise RuntimeError('BridgeCore: call reset() before stepping')
        ee_pos = self.last.result.raw['ee_pos']
        safe_v = self.safety.velocity(v, ee_pos)
        result = self.world.step(safe_v, self._width)
        self.stamp_ns += self.period_ns
        self.steps_in_episode += 1
        self.last = Stepped(result, self.stamp_ns, safe_v, self._width, stale)
        return self.last


def hand_y_axis(quat_xyzw: np.ndarray) -> np.ndarray:
    """Hand y axis (the direction the fingers open along) of an xyzw quaternion, (3,)."""
    x, y, z, w = (float(v) for v in quat_xyzw)
    return np.array([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)])


def fingertip_wrench(raw: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Contact wrench the environment exerts on the fingertips, base frame: (force (3,) N, torque).

    The sim gives each pad's normal force magnitude; pad normals are taken along the hand y axis
    (the left pad sits at +y and is pushed towards +y).  A squeeze cancels out, as it would on
    a wrist F/T sensor; torque about the fingertip centre is zero for forces along the pad axis.
    """
    y_axis = hand_y_axis(raw['ee_quat'])
    force = (float(raw['force_left']) - float(raw['force_right'])) * y_axis
    return force, np.zeros(3)


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """dataclasses.replace restricted to the fields ``cfg`` actually has."""
    names = {f.name for f in fields(cfg)}
    return replace(cfg, **{k: v for k, v in overrides.items() if k in names})
