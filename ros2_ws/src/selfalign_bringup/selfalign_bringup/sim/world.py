"""The PyBullet scene: Franka Panda on a table, one 5 cm block, a green goal marker, a camera.

Pure Python + pybullet (no rclpy): the ROS bridge and the gymnasium envs both drive this class.
Each ``PandaWorld`` owns its own DIRECT physics client, so several worlds can live in one process.

Frames: the robot base frame is the PyBullet world frame. The Panda base (link 0) sits at the
origin on the table top (z = 0); x points away from the robot, z up. Every position in
``StepResult.raw`` is in this frame, so it is also the contract's ``base_link`` frame.

Control: ``step(ee_velocity_mps, finger_width_m)`` integrates a *commanded* EE target (clipped to
the workspace box and the speed cap; it never follows the measured pose, so a blocked arm does not
wind up), solves IK for link 11 (fingertip centre) with the hand pointing down, and drives joints
0-6 by position control, interpolating the target ``ik_updates_per_step`` times per control period
so the arm moves at the commanded speed. The fingers (joints 9, 10) track width/2 each under a
force limit. Per finger pad the contact normal force against the block is taken as the maximum
over the substeps (``getContactPoints`` only reports the last substep).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
import os
import re
import tempfile

import numpy as np
import pybullet as p
import pybullet_data

from selfalign_bringup.sim import camera
from selfalign_bringup.sim.config import SimConfig
from selfalign_core import features

#: PyBullet link indices of the pybullet_data Panda (docs/method.md "Simulator facts").
ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINT_IDS = (9, 10)
LEFT_FINGER_LINK = 9
RIGHT_FINGER_LINK = 10
EE_LINK = 11  # panda_grasptarget: the point between the fingertips
#: Joint-space rest pose the null-space IK pulls towards (a standard Panda 'ready' pose).
REST_POSE = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, math.pi / 4)
#: Hand pointing straight down, fingers opening along the base y axis.
EE_DOWN_QUAT = (1.0, 0.0, 0.0, 0.0)
_ARM_FORCES_N = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
#: Table box: half extents and centre, m (top face at z = 0), and colour.
TABLE_HALF_M = (0.65, 0.6, 0.025)
TABLE_CENTRE_M = (0.45, 0.0, -0.025)
TABLE_RGB = (0.55, 0.42, 0.3)
#: The viewer camera of evaluation videos (render_video): a three-quarter view from the front
#: right that frames the arm, the table top, the block and the goal, base frame, m.
VIDEO_EYE_M = (1.45, -0.9, 0.95)
VIDEO_TARGET_M = (0.42, 0.0, 0.18)
VIDEO_FOV_DEG = 46.0
_RAW_NAMES = tuple(n for n in features.RAW_NAMES if n != 'action')


@dataclass
class StepResult:
    """What the world reports after ``reset`` or one control step.

    raw: every ``features.RAW`` name except 'action'; vectors as float64 arrays ((3,) positions
    m and velocities m/s, (4,) quaternions xyzw), scalars as Python floats (m, N).
    joint_positions / joint_velocities / joint_efforts: (9,) in ``PandaWorld.joint_names`` order
    (rad, rad/s, N·m; the two finger joints in m, m/s and — as efforts — the pad's contact force
    in N, which is how the contract carries finger forces).
    block_rest_z: block centre height when resting on the table, m (for ``block_lift``).
    sim_time_s: simulated time since reset.
    ee_target_m: the commanded (clipped) EE target, (3,) m, base frame.
    """

    raw: dict
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    joint_efforts: np.ndarray
    block_rest_z: float
    sim_time_s: float
    ee_target_m: np.ndarray = field(default_factory=lambda: np.zeros(3))


def _low_poly_panda_urdf() -> str:
    """Text of panda.urdf with every visual mesh replaced by its collision mesh (absolute paths).

    The stock visual meshes cost ~21 ms per 84x84 TinyRenderer frame, the collision meshes ~2 ms.
    """
    root = os.path.join(pybullet_data.getDataPath(), 'franka_panda')
    with open(os.path.join(root, 'panda.urdf'), encoding='utf-8') as fh:
        text = fh.read()
    text = text.replace('meshes/visual/', 'meshes/collision/')
    text = re.sub(r'package://meshes/', root.replace('\\', '/') + '/meshes/', text)
    return text


_URDF_CACHE: dict[str, str] = {}


def _panda_urdf_path() -> str:
    """A per-process temp copy of the low-poly Panda URDF (written once)."""
    path = _URDF_CACHE.get('panda')
    if path is None or not os.path.exists(path):
        fd, path = tempfile.mkstemp(prefix='selfalign_panda_', suffix='.urdf')
        with os.fdopen(fd, 'w', encoding='utf-8') as fh:
            fh.write(_low_poly_panda_urdf())
        _URDF_CACHE['panda'] = path
    return path


class PandaWorld:
    """One simulated scene. Not thread-safe; one world per thread/process."""

    def __init__(self, cfg: SimConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else SimConfig()
        if abs(self.cfg.block_size_m - features.BLOCK_SIZE_M) > 1e-9:
            raise ValueError(f'SimConfig.block_size_m={self.cfg.block_size_m} differs from '
                             f'features.BLOCK_SIZE_M={features.BLOCK_SIZE_M}; the derived '
                             'distances assume the latter')
        self._cid = p.connect(p.DIRECT)
        self._closed = False
        # Camera pose actually rendered from (domain randomisation may shift it per episode).
        self._cam_eye = tuple(float(x) for x in self.cfg.camera_eye_m)
        self._cam_target = tuple(float(x) for x in self.cfg.camera_target_m)
        self._finger_force_n = float(self.cfg.finger_force_n)
        self._joint_damping = 0.0
        self._build()
        self._rng = np.random.default_rng(0)
        self._target = np.asarray(self.cfg.ee_home_m, float)
        self._prev_ee = np.zeros(3)
        self._prev_block = np.zeros(3)
        self._block_start = np.zeros(3)
        self._goal = np.zeros(3)
        self._block_rest_z = self.cfg.block_size_m / 2
        self._time = 0.0
        self._width_cmd = 0.08
        self._forces = np.zeros(2)
        self._has_reset = False
        self._masks: dict[int, np.ndarray] = {}
        self._table_rgb: np.ndarray | None = None

    # ------------------------------------------------------------------ scene
    def _build(self) -> None:
        c, cfg = self._cid, self.cfg
        p.resetSimulation(physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.setTimeStep(cfg.timestep_s, physicsClientId=c)
        p.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=c)
        # Table: a static box whose top face is z = 0, under robot and workspace. With
        # fast_table_render its visual is transparent (TinyRenderer skips it; filling the whole
        # frame with it cost ~2 ms of ~3.5 ms per 84x84 image) and render_rgb paints its top face
        # into the background pixels instead.
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=TABLE_HALF_M, physicsClientId=c)
        alpha = 0.0 if cfg.fast_table_render else 1.0
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=TABLE_HALF_M,
                                  rgbaColor=(*TABLE_RGB, alpha), physicsClientId=c)
        self.table_id = p.createMultiBody(0, col, vis, basePosition=TABLE_CENTRE_M,
                                          physicsClientId=c)
        p.changeDynamics(self.table_id, -1, lateralFriction=1.0, physicsClientId=c)
        # Robot: fixed base at the origin, low-poly visuals.
        self.robot_id = p.loadURDF(_panda_urdf_path(), basePosition=(0, 0, 0),
                                   useFixedBase=True, physicsClientId=c)
        for link in range(-1, p.getNumJoints(self.robot_id, physicsClientId=c)):
            rgba = (0.15, 0.15, 0.15, 1) if link >= 8 else (0.9, 0.9, 0.9, 1)
            p.changeVisualShape(self.robot_id, link, rgbaColor=rgba, physicsClientId=c)
        for link in (LEFT_FINGER_LINK, RIGHT_FINGER_LINK):
            p.changeDynamics(self.robot_id, link, lateralFriction=cfg.finger_lateral_friction,
                             physicsClientId=c)
        self._movable = [j for j in range(p.getNumJoints(self.robot_id, physicsClientId=c))
                         if p.getJointInfo(self.robot_id, j, physicsClientId=c)[2]
                         != p.JOINT_FIXED]
        infos = [p.getJointInfo(self.robot_id, j, physicsClientId=c) for j in self._movable]
        self._joint_names = tuple(i[1].decode() for i in infos)
        self._lower = [i[8] for i in infos]
        self._upper = [i[9] for i in infos]
        self._ranges = [u - lo for lo, u in zip(self._lower, self._upper)]
        self._rest = list(REST_POSE) + [0.04, 0.04]
        # Block: a cube built here so that its inertia follows from mass and size.
        s = cfg.block_size_m / 2
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=(s, s, s), physicsClientId=c)
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=(s, s, s),
                                  rgbaColor=(0.85, 0.15, 0.1, 1), physicsClientId=c)
        self.block_id = p.createMultiBody(cfg.block_mass_kg, col, vis, basePosition=(0.5, 0, s),
                                          physicsClientId=c)
        p.changeDynamics(self.block_id, -1, lateralFriction=cfg.block_lateral_friction,
                         spinningFriction=0.001, rollingFriction=0.0, physicsClientId=c)
        # Goal: visual only (no collision), a flat green disc on the table.
        vis = p.createVisualShape(p.GEOM_CYLINDER, radius=0.03, length=0.002,
                                  rgbaColor=(0.1, 0.8, 0.2, 1), physicsClientId=c)
        self.goal_id = p.createMultiBody(0, -1, vis, basePosition=(0.5, 0.1, 0.001),
                                         physicsClientId=c)
        self._view = p.computeViewMatrix(self._cam_eye, self._cam_target, (0, 0, 1),
                                         physicsClientId=c)
        self._proj = p.computeProjectionMatrixFOV(cfg.camera_fov_deg, 1.0, camera.NEAR_M,
                                                  camera.FAR_M, physicsClientId=c)

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Names of the 9 movable joints (7 arm, 2 fingers), the order of StepResult arrays."""
        return self._joint_names

    # ------------------------------------------------------------------ control
    def _ik(self, target: np.ndarray) -> list[float]:
        q = p.calculateInverseKinematics(
            self.robot_id, EE_LINK, target.tolist(), EE_DOWN_QUAT,
            lowerLimits=self._lower, upperLimits=self._upper, jointRanges=self._ranges,
            restPoses=self._rest, maxNumIterations=20, residualThreshold=1e-4,
            physicsClientId=self._cid)
        return list(q[:len(ARM_JOINTS)])

    def _command_arm(self, q: list[float]) -> None:
        p.setJointMotorControlArray(self.robot_id, ARM_JOINTS, p.POSITION_CONTROL,
                                    targetPositions=q, forces=_ARM_FORCES_N,
                                    physicsClientId=self._cid)

    def _command_fingers(self, width_m: float) -> None:
        half = float(np.clip(width_m, 0.0, 0.08)) / 2
        f = self._finger_force_n
        p.setJointMotorControlArray(self.robot_id, FINGER_JOINT_IDS, p.POSITION_CONTROL,
                                    targetPositions=(half, half), forces=(f, f),
                                    physicsClientId=self._cid)

    def _pad_forces(self) -> np.ndarray:
        out = np.zeros(2)
        for k, link in enumerate((LEFT_FINGER_LINK, RIGHT_FINGER_LINK)):
            pts = p.getContactPoints(bodyA=self.robot_id, bodyB=self.block_id, linkIndexA=link,
                                     physicsClientId=self._cid)
            out[k] = sum(pt[9] for pt in pts) if pts else 0.0
        return out

    def _simulate(self, n: int) -> None:
        for _ in range(n):
            p.stepSimulation(physicsClientId=self._cid)
            np.maximum(self._forces, self._pad_forces(), out=self._forces)

    def reset(self, seed: int | None = None) -> StepResult:
        """Start an episode: block and goal drawn from ``default_rng(seed)``, arm at home, open.

        Same seed -> same scene and same trajectory under the same commands.
        """
        self._check_open()
        cfg, c = self.cfg, self._cid
        self._rng = np.random.default_rng(seed)
        self._finger_force_n = float(cfg.finger_force_n)  # apply_dynamics overrides per episode
        self._joint_damping = 0.0
        # The whole simulation is rebuilt so no solver cache or contact survives an episode:
        # this keeps reset(seed) bit-for-bit deterministic (a few ms, once per episode).
        self._build()
        lo, hi = np.asarray(cfg.block_spawn_low_m), np.asarray(cfg.block_spawn_high_m)
        block_xy = self._rng.uniform(lo, hi)
        glo, ghi = np.asarray(cfg.goal_spawn_low_m), np.asarray(cfg.goal_spawn_high_m)
        for _ in range(1000):
            goal_xy = self._rng.uniform(glo, ghi)
            d = float(np.linalg.norm(goal_xy - block_xy))
            if (cfg.goal_min_distance_m <= d <= cfg.goal_max_distance_m
                    and _angle_from_x_deg(goal_xy - block_xy) <= cfg.goal_max_angle_deg):
                break
        else:
            raise ValueError('no goal position within goal_spawn_low_m/high_m is '
                             f'{cfg.goal_min_distance_m}-{cfg.goal_max_distance_m} m from the '
                             f'block within {cfg.goal_max_angle_deg} deg of +x; widen the goal '
                             'box, the distance range or goal_max_angle_deg in SimConfig')
        s = cfg.block_size_m / 2
        p.resetBasePositionAndOrientation(self.block_id, (*block_xy, s), (0, 0, 0, 1),
                                          physicsClientId=c)
        p.resetBasePositionAndOrientation(self.goal_id, (*goal_xy, 0.001), (0, 0, 0, 1),
                                          physicsClientId=c)
        # Arm: teleport to the rest pose, then to the IK solution for the home EE position.
        for j, q in zip(self._movable, self._rest):
            p.resetJointState(self.robot_id, j, q, physicsClientId=c)
        home = np.asarray(cfg.ee_home_m, float)
        for _ in range(5):
            q = self._ik(home)
            for j, qj in zip(ARM_JOINTS, q):
                p.resetJointState(self.robot_id, j, qj, physicsClientId=c)
        self._command_arm(q)
        self._width_cmd = 0.08
        self._command_fingers(self._width_cmd)
        self._target = home.copy()
        self._forces = np.zeros(2)
        self._simulate(5)  # let the block settle on the table
        block_pos = np.asarray(p.getBasePositionAndOrientation(self.block_id,
                                                               physicsClientId=c)[0])
        self._block_start = block_pos.copy()
        self._block_rest_z = float(block_pos[2])
        self._goal = np.array([goal_xy[0], goal_xy[1], self._block_rest_z])
        self._prev_ee = self._ee_pos()
        self._prev_block = block_pos
        self._time = 0.0
        self._forces = np.zeros(2)
        self._has_reset = True
        return self._observe(zero_velocity=True)

    def step(self, ee_velocity_mps: np.ndarray, finger_width_m: float) -> StepResult:
        """Advance one control period under an EE velocity (3,) m/s (base frame) and a finger
        width command (m, 0 closed .. 0.08 open). The velocity is capped at max_ee_speed_mps
        (norm) and the integrated target clipped to the workspace box."""
        self._check_open()
        if not self._has_reset:
            raise RuntimeError('PandaWorld.step() before reset(); call reset(seed) first')
        cfg = self.cfg
        v = np.asarray(ee_velocity_mps, dtype=float).reshape(-1)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            raise ValueError(f'ee_velocity_mps must be 3 finite numbers (m/s), got {v!r}')
        if not math.isfinite(float(finger_width_m)):
            raise ValueError(f'finger_width_m must be finite, got {finger_width_m!r}')
        speed = float(np.linalg.norm(v))
        if speed > cfg.max_ee_speed_mps:
            v = v * (cfg.max_ee_speed_mps / speed)
        start = self._target
        end = np.clip(start + v * cfg.control_period_s, cfg.ee_workspace_low_m,
                      cfg.ee_workspace_high_m)
        self._width_cmd = float(np.clip(finger_width_m, 0.0, 0.08))
        self._command_fingers(self._width_cmd)
        self._forces = np.zeros(2)
        n = cfg.ik_updates_per_step
        done = 0
        for k in range(1, n + 1):
            self._command_arm(self._ik(start + (end - start) * (k / n)))
            upto = (cfg.substeps * k) // n
            self._simulate(upto - done)
            done = upto
        self._target = end
        self._time += cfg.control_period_s
        return self._observe(zero_velocity=False)

    # ------------------------------------------------------------------ sensing
    def _ee_pos(self) -> np.ndarray:
        st = p.getLinkState(self.robot_id, EE_LINK, computeForwardKinematics=True,
                            physicsClientId=self._cid)
        return np.asarray(st[4], float)

    def _observe(self, zero_velocity: bool) -> StepResult:
        c = self._cid
        st = p.getLinkState(self.robot_id, EE_LINK, computeForwardKinematics=True,
                            physicsClientId=c)
        ee_pos, ee_quat = np.asarray(st[4], float), np.asarray(st[5], float)
        bpos, bquat = p.getBasePositionAndOrientation(self.block_id, physicsClientId=c)
        bpos, bquat = np.asarray(bpos, float), np.asarray(bquat, float)
        dt = self.cfg.control_period_s
        if zero_velocity:
            ee_vel, block_vel = np.zeros(3), np.zeros(3)
        else:
            ee_vel = (ee_pos - self._prev_ee) / dt
            block_vel = (bpos - self._prev_block) / dt
        self._prev_ee, self._prev_block = ee_pos, bpos
        js = p.getJointStates(self.robot_id, self._movable, physicsClientId=c)
        q = np.array([s[0] for s in js])
        qd = np.array([s[1] for s in js])
        tau = np.array([s[3] for s in js])
        tau[-2:] = self._forces  # finger effort = that pad's contact force, N
        raw = {
            'ee_pos': ee_pos,
            'ee_quat': ee_quat,
            'ee_vel': ee_vel,
            'finger_width': float(q[-2] + q[-1]),
            'force_left': float(self._forces[0]),
            'force_right': float(self._forces[1]),
            'block_pos': bpos,
            'block_quat': bquat,
            'block_vel': block_vel,
            'block_start_pos': self._block_start.copy(),
            'goal_pos': self._goal.copy(),
        }
        return StepResult(raw=raw, joint_positions=q, joint_velocities=qd, joint_efforts=tau,
                          block_rest_z=self._block_rest_z, sim_time_s=self._time,
                          ee_target_m=self._target.copy())

    # ------------------------------------------------------------------ camera
    def render_rgb(self, size_px: int | None = None) -> np.ndarray:
        """Image of the fixed camera, uint8 (H, W, 3) with H = W = size_px (default from cfg)."""
        self._check_open()
        size = int(size_px or self.cfg.image_size_px)
        _, _, rgba, depth, _ = p.getCameraImage(
            size, size, self._view, self._proj, shadow=0, renderer=p.ER_TINY_RENDERER,
            flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=self._cid)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[:, :, :3].copy()
        if self.cfg.fast_table_render:
            background = np.asarray(depth, dtype=np.float32).reshape(size, size) >= 1.0 - 1e-6
            rgb[background & self._table_mask(size)] = self._table_color()
        return rgb

    def render_video(self, width_px: int = 320, height_px: int = 240) -> np.ndarray:
        """A frame of the viewer camera (VIDEO_EYE_M), uint8 (height_px, width_px, 3).

        For people, not policies: the table is drawn and shadows are cast (~30 ms for 320 x 240
        on one CPU core with TinyRenderer), so it is rendered only for episodes being filmed.
        """
        self._check_open()
        w, h, c = int(width_px), int(height_px), self._cid
        view = p.computeViewMatrix(VIDEO_EYE_M, VIDEO_TARGET_M, (0, 0, 1), physicsClientId=c)
        proj = p.computeProjectionMatrixFOV(VIDEO_FOV_DEG, w / h, camera.NEAR_M, camera.FAR_M,
                                            physicsClientId=c)
        hidden = self.cfg.fast_table_render  # the fast path keeps the table's visual transparent
        if hidden:
            p.changeVisualShape(self.table_id, -1, rgbaColor=(*TABLE_RGB, 1.0), physicsClientId=c)
        try:
            _, _, rgba, _, _ = p.getCameraImage(
                # No lightDirection: TinyRenderer keeps it for later calls, which would change
                # the policy camera's images (render_rgb) after a filmed episode.
                w, h, view, proj, shadow=1,
                renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK,
                physicsClientId=c)
        finally:
            if hidden:
                p.changeVisualShape(self.table_id, -1, rgbaColor=(*TABLE_RGB, 0.0),
                                    physicsClientId=c)
        return np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3].copy()

    def _table_mask(self, size: int) -> np.ndarray:
        """(size, size) bool: pixels whose camera ray hits the table top (cached per size)."""
        mask = self._masks.get(size)
        if mask is None:
            info = self.camera_info(size)
            uv = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)
            rays = np.concatenate([uv.reshape(-1, 2), np.ones((size * size, 1))], axis=1)
            rays = rays @ np.linalg.inv(info['K']).T @ _quat_matrix(info['quaternion']).T
            eye = info['position']
            with np.errstate(divide='ignore', invalid='ignore'):
                t = -eye[2] / rays[:, 2]
            hit = eye[:2] + t[:, None] * rays[:, :2]
            lo = np.array(TABLE_CENTRE_M[:2]) - TABLE_HALF_M[:2]
            hi = np.array(TABLE_CENTRE_M[:2]) + TABLE_HALF_M[:2]
            mask = ((t > 0) & np.all(hit >= lo, axis=1) & np.all(hit <= hi, axis=1))
            mask = mask.reshape(size, size)
            self._masks[size] = mask
        return mask

    def _table_color(self) -> np.ndarray:
        """The table top's rendered colour (flat-shaded), probed once per world: uint8 (3,).

        Rendered by the scene camera with the table opaque; the pixels the segmentation mask
        assigns to the table all share this colour.
        """
        if self._table_rgb is None:
            c, size = self._cid, 32
            p.changeVisualShape(self.table_id, -1, rgbaColor=(*TABLE_RGB, 1.0), physicsClientId=c)
            _, _, rgba, _, seg = p.getCameraImage(size, size, self._view, self._proj, shadow=0,
                                                  renderer=p.ER_TINY_RENDERER,
                                                  physicsClientId=c)
            p.changeVisualShape(self.table_id, -1, rgbaColor=(*TABLE_RGB, 0.0), physicsClientId=c)
            rgb = np.asarray(rgba, np.uint8).reshape(size, size, 4)[:, :, :3]
            on_table = np.asarray(seg).reshape(size, size) == self.table_id
            if not on_table.any():
                raise RuntimeError('the camera sees no table; check camera_eye_m/target_m')
            self._table_rgb = np.median(rgb[on_table], axis=0).astype(np.uint8)
        return self._table_rgb

    def camera_info(self, size_px: int | None = None) -> dict:
        """Intrinsics and pose of the camera (see ``camera.camera_info``), frame
        'camera_optical_frame', pose in the base frame."""
        cfg = self.cfg
        return camera.camera_info(int(size_px or cfg.image_size_px), cfg.camera_fov_deg,
                                  np.asarray(self._cam_eye), np.asarray(self._cam_target))

    # ------------------------------------------------------------------ domain randomisation
    def apply_dynamics(self, block_mass_kg: float | None = None,
                       block_lateral_friction: float | None = None,
                       block_rolling_friction: float | None = None,
                       block_restitution: float | None = None,
                       joint_damping: float | None = None,
                       finger_force_n: float | None = None) -> None:
        """Override dynamics for the current episode (call after ``reset``; the next reset
        rebuilds the scene from ``cfg``). Units: kg, friction coefficients, restitution in
        [0, 1], arm joint damping N·m·s/rad, finger force limit N. None keeps the value."""
        self._check_open()
        c = self._cid
        kw = {}
        if block_mass_kg is not None:
            kw['mass'] = float(block_mass_kg)
        if block_lateral_friction is not None:
            kw['lateralFriction'] = float(block_lateral_friction)
        if block_rolling_friction is not None:
            kw['rollingFriction'] = float(block_rolling_friction)
        if block_restitution is not None:
            kw['restitution'] = float(block_restitution)
        if kw:
            p.changeDynamics(self.block_id, -1, physicsClientId=c, **kw)
        if joint_damping is not None:
            self._joint_damping = float(joint_damping)
            for j in ARM_JOINTS:
                p.changeDynamics(self.robot_id, j, jointDamping=self._joint_damping,
                                 physicsClientId=c)
        if finger_force_n is not None:
            self._finger_force_n = float(finger_force_n)
            self._command_fingers(self._width_cmd)

    def dynamics(self) -> dict[str, float]:
        """The block's and fingers' dynamics now in force (for tests and logs)."""
        info = p.getDynamicsInfo(self.block_id, -1, physicsClientId=self._cid)
        return {'block_mass_kg': info[0], 'block_lateral_friction': info[1],
                'block_rolling_friction': info[6], 'block_restitution': info[5],
                'joint_damping': self._joint_damping,
                'finger_force_n': self._finger_force_n}

    def set_camera_pose(self, eye_m: np.ndarray | None = None,
                        target_m: np.ndarray | None = None) -> None:
        """Render from this camera pose, base frame, m (None: the cfg's); persists across
        resets until changed. ``camera_info`` reports the pose rendered from."""
        self._cam_eye = tuple(float(x) for x in (self.cfg.camera_eye_m if eye_m is None
                                                  else eye_m))
        self._cam_target = tuple(float(x) for x in (self.cfg.camera_target_m if target_m is None
                                                     else target_m))
        self._view = p.computeViewMatrix(self._cam_eye, self._cam_target, (0, 0, 1),
                                         physicsClientId=self._cid)
        self._masks = {}

    # ------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError('PandaWorld is closed; create a new one')

    def close(self) -> None:
        """Disconnect the physics client (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                p.disconnect(physicsClientId=self._cid)
            except p.error:
                pass

    def __enter__(self) -> PandaWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: pybullet may be gone
            pass


def _angle_from_x_deg(v: np.ndarray) -> float:
    """Angle between the horizontal vector v and +x, degrees in [0, 180]."""
    return float(np.degrees(np.arctan2(abs(v[1]), v[0])))


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) -> rotation matrix (3, 3)."""
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def raw_names() -> tuple[str, ...]:
    """The raw quantity names ``StepResult.raw`` holds (features.RAW minus 'action')."""
    return _RAW_NAMES
