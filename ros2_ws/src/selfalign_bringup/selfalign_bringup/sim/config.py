"""Configuration of the PyBullet scene: one frozen dataclass, validated, loadable from a dict.

Frames: every position is in the robot base frame, which is also the PyBullet world frame (the
robot base sits at the origin, on the table top at z = 0, x pointing away from the robot).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
import math
from typing import Any

from selfalign_core.contract import ActionScale

_DEFAULT_SCALE = ActionScale()

#: Robots the scene can build.
ROBOTS = ('panda',)


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes the simulated world; defaults: docs/method.md "Task set-up".

    Block mass/friction and the speed cap are chosen so that pushing is learnable: the spike's
    0.1 kg block with the default friction slid 20-50 cm when hit fast. What decides it is the
    speed of the finger at impact, so the commanded EE speed is capped (the contract's 0.3 m/s)
    and the IK target is interpolated inside the control period (no jump of the position
    controller). Measured here (pushing with the closed fingers at the cap, then stopping): the
    block coasts 1.5-2 cm after the stop command; with a 1 m/s cap a 0.1 kg, friction-0.5 block
    is flung ~23 cm in 0.4 s. The 0.3 kg mass and friction 0.9 (x table 1.0) add margin and
    make the block hard to flick with a fast lateral swipe. The scripted pusher succeeds in
    ~97 % of episodes (benchmarks/env_speed.py).
    """

    robot: str = 'panda'
    """Robot model; only 'panda' (pybullet_data franka_panda/panda.urdf) so far."""
    control_period_s: float = _DEFAULT_SCALE.control_period_s
    """Sim time advanced by one ``step`` (10 Hz control, contract.ActionScale)."""
    substeps: int = 16
    """Physics steps per control period (timestep = control_period_s / substeps; 16 -> 6.25 ms,
    near PyBullet's 1/240 s default). 20 costs ~10 % more CPU per step for no change in the
    scripted controllers' success; 10 is ~1.5x faster but the pushed block chatters more."""
    ik_updates_per_step: int = 2
    """IK solves per control period; the EE target is interpolated between them so the arm
    moves at the commanded speed instead of jumping to the end-of-period target."""
    ee_workspace_low_m: tuple[float, float, float] = (0.30, -0.30, 0.015)
    """Lower corner of the box the commanded EE target (link 11, fingertip centre) is clipped
    to, base frame. z = 1.5 cm lets the fingertips (1.1 cm below link 11) reach ~0.4 cm above
    the table, i.e. the lower half of a 5 cm block."""
    ee_workspace_high_m: tuple[float, float, float] = (0.75, 0.30, 0.40)
    """Upper corner of the commanded-EE-target box, base frame. The far corners (x = 0.75,
    |y| = 0.3) are at the Panda's reach with the hand pointing down: there the EE stops
    1.5-5 cm short of the target. Blocks and goals spawn at x <= 0.65, well inside."""
    max_ee_speed_mps: float = _DEFAULT_SCALE.max_speed_mps
    """Speed cap on the commanded EE velocity (norm), m/s; larger commands are scaled down."""
    ee_home_m: tuple[float, float, float] = (0.45, 0.0, 0.20)
    """EE (fingertip centre) position after reset, base frame, gripper open, pointing down."""
    block_size_m: float = 0.05
    """Edge length of the cube; must match features.BLOCK_SIZE_M for the derived distances."""
    block_mass_kg: float = 0.3
    """Block mass. Heavier than the spike's 0.1 kg so that a push does not send it flying."""
    block_lateral_friction: float = 0.9
    """Coulomb friction of the block (PyBullet multiplies the two bodies' coefficients)."""
    finger_lateral_friction: float = 1.0
    """Coulomb friction of the finger pads (grip on the block for grasp_lift)."""
    finger_force_n: float = 20.0
    """Force limit of each finger's position controller (Panda URDF effort limit)."""
    block_spawn_low_m: tuple[float, float] = (0.45, -0.12)
    """Lower (x, y) corner of the box the block centre is drawn from at reset, base frame."""
    block_spawn_high_m: tuple[float, float] = (0.60, 0.12)
    """Upper (x, y) corner of the block spawn box."""
    goal_spawn_low_m: tuple[float, float] = (0.40, -0.20)
    """Lower (x, y) corner of the box the goal is drawn from at reset, base frame."""
    goal_spawn_high_m: tuple[float, float] = (0.65, 0.20)
    """Upper (x, y) corner of the goal spawn box."""
    goal_min_distance_m: float = 0.10
    """Minimum horizontal block-to-goal distance at reset (above the 5 cm success radius)."""
    goal_max_distance_m: float = 0.20
    """Maximum horizontal block-to-goal distance at reset (keeps push reachable in 100 steps)."""
    goal_max_angle_deg: float = 180.0
    """Largest angle between the block-to-goal direction and +x (away from the robot base),
    degrees: 180 draws the goal in any direction, 90 never toward the robot (the fingers need
    not go round the block to its far side), 0 straight ahead as in ManiSkill's PushCube."""
    image_size_px: int = 84
    """Default side of the square camera image (DrQ-v2 uses 84x84)."""
    camera_eye_m: tuple[float, float, float] = (0.90, 0.0, 0.70)
    """Camera position, base frame: in front of the robot, looking back at the workspace."""
    camera_target_m: tuple[float, float, float] = (0.48, 0.0, -0.05)
    """Point the camera looks at, base frame."""
    camera_fov_deg: float = 55.0
    """Vertical field of view of the camera."""
    fast_table_render: bool = True
    """Skip the table in the rasteriser and paint its (flat-shaded) top into the background
    pixels: the same image, ~2 ms less per 84x84 frame. False renders the table normally."""

    def __post_init__(self) -> None:
        _check(self)

    @property
    def timestep_s(self) -> float:
        """Physics timestep = control_period_s / substeps."""
        return self.control_period_s / self.substeps

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimConfig:
        """Build from a plain dict (e.g. YAML); unknown keys or bad values raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f'SimConfig.from_dict needs a dict, got {type(d).__name__}')
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f'SimConfig: unknown key(s) {unknown}; valid keys are '
                             f'{sorted(names)}')
        kwargs = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            default = getattr(cls, f.name)
            if isinstance(default, tuple):
                if not isinstance(v, (list, tuple)) or len(v) != len(default):
                    raise ValueError(f'SimConfig.{f.name}: expected a list of {len(default)} '
                                     f'numbers, got {v!r}')
                v = tuple(_number(f.name, x) for x in v)
            elif isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ValueError(f'SimConfig.{f.name}: expected true/false, got {v!r}')
            elif isinstance(default, int):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f'SimConfig.{f.name}: expected an integer, got {v!r}')
            elif isinstance(default, float):
                v = _number(f.name, v)
            elif isinstance(default, str) and not isinstance(v, str):
                raise ValueError(f'SimConfig.{f.name}: expected a string, got {v!r}')
            kwargs[f.name] = v
        return cls(**kwargs)


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f'SimConfig.{name}: expected a finite number, got {v!r}')
    return float(v)


def _check(c: SimConfig) -> None:
    def fail(name: str, why: str) -> None:
        raise ValueError(f'SimConfig.{name}={getattr(c, name)!r}: {why}')

    if c.robot not in ROBOTS:
        fail('robot', f'choose one of {ROBOTS}')
    for name in ('control_period_s', 'max_ee_speed_mps', 'block_size_m', 'block_mass_kg',
                 'finger_force_n', 'camera_fov_deg', 'goal_max_distance_m'):
        if not getattr(c, name) > 0:
            fail(name, 'must be > 0')
    for name in ('block_lateral_friction', 'finger_lateral_friction', 'goal_min_distance_m'):
        if not getattr(c, name) >= 0:
            fail(name, 'must be >= 0')
    if c.control_period_s > 1.0:
        fail('control_period_s', 'must be <= 1 s (10 Hz control is 0.1)')
    if not 1 <= c.substeps <= 1000:
        fail('substeps', 'must be an integer in [1, 1000] (16 gives a 6.25 ms physics step)')
    if not 1 <= c.ik_updates_per_step <= c.substeps:
        fail('ik_updates_per_step', f'must be in [1, substeps={c.substeps}]')
    if not 16 <= c.image_size_px <= 1024:
        fail('image_size_px', 'must be in [16, 1024] (84 for DrQ-v2)')
    if c.camera_fov_deg >= 180:
        fail('camera_fov_deg', 'must be < 180')
    for low, high in (('ee_workspace_low_m', 'ee_workspace_high_m'),
                      ('block_spawn_low_m', 'block_spawn_high_m'),
                      ('goal_spawn_low_m', 'goal_spawn_high_m')):
        lo, hi = getattr(c, low), getattr(c, high)
        if len(lo) != len(hi) or any(a > b for a, b in zip(lo, hi)):
            fail(low, f'must be <= {high}={hi} component-wise (swap them?)')
    if c.ee_workspace_low_m[2] < 0.005:
        fail('ee_workspace_low_m', 'z must be >= 0.005 m, the fingertips would hit the table')
    if not (c.ee_workspace_low_m[0] <= c.ee_home_m[0] <= c.ee_workspace_high_m[0]
            and c.ee_workspace_low_m[1] <= c.ee_home_m[1] <= c.ee_workspace_high_m[1]
            and c.ee_workspace_low_m[2] <= c.ee_home_m[2] <= c.ee_workspace_high_m[2]):
        fail('ee_home_m', 'must lie inside [ee_workspace_low_m, ee_workspace_high_m]')
    if math.hypot(*c.block_spawn_high_m) > 0.8:
        fail('block_spawn_high_m', 'lies out of the Panda reach (~0.8 m); move it closer')
    if not 0.0 <= c.goal_max_angle_deg <= 180.0:
        fail('goal_max_angle_deg', 'must be in [0, 180] degrees (180 = any direction)')
    if c.goal_min_distance_m > c.goal_max_distance_m:
        fail('goal_min_distance_m', f'must be <= goal_max_distance_m={c.goal_max_distance_m}')
