"""The reward-input vocabulary: named per-step quantities computed from the robot contract.

This module is the single definition shared by the simulator, the policy's observation builder
and replay, the reward evaluator (LLM-written reward code reads exactly these names) and the LLM
prompts (which list ``describe_vocabulary()``). It imports only numpy.

Two layers:

* **raw** quantities are what a driver offers through the robot contract (docs/design.md
  "Robot contract"): poses from ``/ee_pose`` and ``/object_pose``, finger width and per-finger
  contact force from ``/joint_states`` (finger joint position and effort), the goal from the
  reset reply, and what the policy itself knows (its last action).  Velocities are finite
  differences of poses over the control period, computed the same way in simulation and over
  ROS.
* **features** are the raw quantities plus derived ones (shape-to-shape distances, lift height,
  goal distance).  ``compute_features`` turns a batch of raw dicts into features.

Arrays are batched along the leading axis: scalars are ``(B,)``, vectors ``(B, 3)``; dtype float32.
``pack``/``unpack`` convert between the feature dict and one flat ``(B, FEATURE_DIM)`` array, the
form stored in replay buffers and ``selfalign_interfaces/Episode``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Edge length of the task block, m (one 5 cm block, docs/method.md "Task set-up").
BLOCK_SIZE_M = 0.05
#: Horizontal distance of the push point behind the block centre, m: where the fingertip centre
#: of the closed Panda gripper sits while pushing (measured with the scripted pusher: 3.7-3.8 cm
#: on average in contact; the near face is 2.5 cm from the centre).
PUSH_POINT_OFFSET_M = 0.04


@dataclass(frozen=True)
class Feature:
    """One entry of the vocabulary."""

    name: str
    shape: tuple[int, ...]
    unit: str
    meaning: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int)) if self.shape else 1


#: Raw quantities a driver (or the simulator) provides each control step.
RAW: tuple[Feature, ...] = (
    Feature('ee_pos', (3,), 'm',
            'fingertip centre point (between the finger pads) in the robot base frame'),
    Feature('ee_quat', (4,), '', 'end-effector orientation, quaternion (x, y, z, w), base frame'),
    Feature('ee_vel', (3,), 'm/s', 'fingertip centre velocity (finite difference of ee_pos)'),
    Feature('finger_width', (), 'm', 'distance between the finger pads (0 closed, 0.08 open)'),
    Feature('force_left', (), 'N', 'contact normal force on the left finger pad'),
    Feature('force_right', (), 'N', 'contact normal force on the right finger pad'),
    Feature('block_pos', (3,), 'm', 'block centre position, base frame'),
    Feature('block_quat', (4,), '', 'block orientation, quaternion (x, y, z, w)'),
    Feature('block_vel', (3,), 'm/s', 'block centre velocity (finite difference of block_pos)'),
    Feature('block_start_pos', (3,), 'm', 'block centre position at the start of the episode'),
    Feature('goal_pos', (3,), 'm', 'goal position for the block centre (push task)'),
    Feature('action', (4,), '',
            'last action: end-effector delta (dx, dy, dz) and gripper (-1 open, +1 close), '
            'each in [-1, 1]'),
)

#: Quantities derived from the raw ones by ``compute_features``.
DERIVED: tuple[Feature, ...] = (
    Feature('contact_force', (), 'N', 'larger of the two finger contact forces'),
    Feature('both_fingers_contact_force', (), 'N',
            'smaller of the two finger contact forces (large only when both fingers press)'),
    Feature('ee_block_dist', (), 'm',
            'distance from the nearer finger pad to the block surface (0 when touching)'),
    Feature('ee_block_center_dist', (), 'm', 'distance from ee_pos to the block centre'),
    Feature('block_lift', (), 'm', 'height of the block centre above its resting height'),
    Feature('block_goal_dist', (), 'm', 'horizontal (xy) distance from block centre to goal'),
    Feature('block_displacement', (), 'm',
            'horizontal (xy) distance the block moved since the episode start'),
    Feature('ee_speed', (), 'm/s', 'norm of ee_vel'),
    Feature('block_speed', (), 'm/s', 'norm of block_vel'),
    Feature('action_norm', (), '', 'norm of the end-effector part of the action'),
    Feature('ee_push_point_dist', (), 'm',
            'distance from ee_pos to the push point: 4 cm behind the block centre on the side '
            'opposite the goal, at block-centre height (0 when the fingers sit where they push '
            'the block straight toward the goal)'),
)

VOCABULARY: tuple[Feature, ...] = RAW + DERIVED
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in VOCABULARY)
RAW_NAMES: tuple[str, ...] = tuple(f.name for f in RAW)
BY_NAME: dict[str, Feature] = {f.name: f for f in VOCABULARY}


def _layout() -> tuple[dict[str, slice], int]:
    out, i = {}, 0
    for f in VOCABULARY:
        out[f.name] = slice(i, i + f.size)
        i += f.size
    return out, i


#: Column slices of each feature in the packed ``(B, FEATURE_DIM)`` array.
LAYOUT, FEATURE_DIM = _layout()


def _rotate_y_axis(quat: np.ndarray) -> np.ndarray:
    """Return the body y axis of (B, 4) xyzw quaternions, in the base frame, as (B, 3)."""
    x, y, z, w = (quat[:, k] for k in range(4))
    return np.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], axis=-1)


def _rotation_matrices(quat: np.ndarray) -> np.ndarray:
    """(B, 4) xyzw quaternions -> (B, 3, 3) rotation matrices (columns = body axes)."""
    q = quat / np.linalg.norm(quat, axis=-1, keepdims=True).clip(1e-9)
    x, y, z, w = (q[:, k] for k in range(4))
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)


def point_box_distance(points: np.ndarray, box_pos: np.ndarray, box_quat: np.ndarray,
                       size: float = BLOCK_SIZE_M) -> np.ndarray:
    """Distance from (B, 3) points to the surface of cubes of edge ``size``; 0 inside."""
    rot = _rotation_matrices(box_quat)
    local = np.einsum('bji,bj->bi', rot, points - box_pos)  # R^T (p - c)
    outside = np.maximum(np.abs(local) - size / 2, 0.0)
    return np.linalg.norm(outside, axis=-1)


def finger_pad_positions(ee_pos: np.ndarray, ee_quat: np.ndarray,
                         finger_width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right finger pad centres, (B, 3) each: ee_pos -/+ width/2 along the hand y axis."""
    offset = _rotate_y_axis(ee_quat) * (finger_width[:, None] / 2)
    return ee_pos + offset, ee_pos - offset


def push_point(block_pos: np.ndarray, goal_pos: np.ndarray) -> np.ndarray:
    """(B, 3) points ``PUSH_POINT_OFFSET_M`` behind the block centres, away from the goals.

    Horizontal direction goal -> block; height of the block centre. With the block on the goal
    (closer than 1 mm) the direction is undefined and the point is the block centre itself.
    """
    away = block_pos[:, :2] - goal_pos[:, :2]
    norm = np.linalg.norm(away, axis=-1, keepdims=True)
    unit = np.where(norm > 1e-3, away / np.maximum(norm, 1e-3), 0.0)
    out = block_pos.copy()
    out[:, :2] += PUSH_POINT_OFFSET_M * unit
    return out


def compute_features(raw: dict[str, np.ndarray], block_rest_z: float | np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Raw quantities (batched, see ``RAW``) -> the full vocabulary, float32.

    ``block_rest_z`` is the block centre height when it rests on the table (scalar or (B,)).
    Raises ``KeyError`` naming any raw quantity that is missing and ``ValueError`` on bad shapes.
    """
    missing = [n for n in RAW_NAMES if n not in raw]
    if missing:
        raise KeyError(f'raw features missing: {missing}; a driver must provide all of '
                       f'{RAW_NAMES}')
    r = {}
    batch = None
    for f in RAW:
        a = np.asarray(raw[f.name], dtype=np.float32)
        if a.ndim == len(f.shape):  # unbatched single step
            a = a[None]
        if a.shape[1:] != f.shape:
            raise ValueError(f'raw feature {f.name!r} has shape {a.shape}, '
                             f'expected (B, *{f.shape})')
        batch = a.shape[0] if batch is None else batch
        if a.shape[0] != batch:
            raise ValueError(f'raw feature {f.name!r} has batch {a.shape[0]}, others have {batch}')
        r[f.name] = a
    left, right = finger_pad_positions(r['ee_pos'], r['ee_quat'], r['finger_width'])
    d_left = point_box_distance(left, r['block_pos'], r['block_quat'])
    d_right = point_box_distance(right, r['block_pos'], r['block_quat'])
    xy = slice(0, 2)
    r['contact_force'] = np.maximum(r['force_left'], r['force_right'])
    r['both_fingers_contact_force'] = np.minimum(r['force_left'], r['force_right'])
    r['ee_block_dist'] = np.minimum(d_left, d_right)
    r['ee_block_center_dist'] = np.linalg.norm(r['ee_pos'] - r['block_pos'], axis=-1)
    r['block_lift'] = r['block_pos'][:, 2] - np.asarray(block_rest_z, dtype=np.float32)
    r['block_goal_dist'] = np.linalg.norm(r['block_pos'][:, xy] - r['goal_pos'][:, xy], axis=-1)
    r['block_displacement'] = np.linalg.norm(
        r['block_pos'][:, xy] - r['block_start_pos'][:, xy], axis=-1)
    r['ee_speed'] = np.linalg.norm(r['ee_vel'], axis=-1)
    r['block_speed'] = np.linalg.norm(r['block_vel'], axis=-1)
    r['action_norm'] = np.linalg.norm(r['action'][:, :3], axis=-1)
    r['ee_push_point_dist'] = np.linalg.norm(r['ee_pos'] - push_point(r['block_pos'],
                                                                      r['goal_pos']), axis=-1)
    return {n: r[n].astype(np.float32, copy=False) for n in FEATURE_NAMES}


def pack(features: dict[str, np.ndarray]) -> np.ndarray:
    """Feature dict (batched) -> (B, FEATURE_DIM) float32."""
    batch = np.asarray(features[FEATURE_NAMES[0]]).shape[0]
    out = np.empty((batch, FEATURE_DIM), dtype=np.float32)
    for name, sl in LAYOUT.items():
        out[:, sl] = np.asarray(features[name], dtype=np.float32).reshape(batch, -1)
    return out


def unpack(flat: np.ndarray) -> dict[str, np.ndarray]:
    """(..., FEATURE_DIM) array -> feature dict of views; scalars (...,), vectors (..., 3)."""
    flat = np.asarray(flat)
    if flat.shape[-1] != FEATURE_DIM:
        raise ValueError(f'packed features have {flat.shape[-1]} columns, expected {FEATURE_DIM}')
    lead = flat.shape[:-1]
    return {n: flat[..., sl].reshape(lead + BY_NAME[n].shape) for n, sl in LAYOUT.items()}


#: Features that form the policy's state observation, in order.
OBSERVATION_FEATURES: tuple[str, ...] = (
    'ee_pos', 'ee_vel', 'finger_width', 'force_left', 'force_right',
    'block_pos', 'block_vel', 'goal_pos',
)


def observation_vector(features: dict[str, np.ndarray]) -> np.ndarray:
    """Feature dict (batched) -> (B, OBS_DIM) float32 state observation.

    Besides the listed features it appends the block - ee, goal - block and push point - ee
    offsets (``push_point``), which make the MLP's job easier and are computable from any
    driver's contract topics.
    """
    parts = [np.asarray(features[n], np.float32).reshape(len(features['ee_pos']), -1)
             for n in OBSERVATION_FEATURES]
    block, goal = np.asarray(features['block_pos']), np.asarray(features['goal_pos'])
    parts.append(block - features['ee_pos'])
    parts.append(goal - block)
    parts.append(push_point(block, goal) - features['ee_pos'])
    return np.concatenate(parts, axis=-1).astype(np.float32, copy=False)


OBS_DIM = sum(BY_NAME[n].size for n in OBSERVATION_FEATURES) + 9


def describe_vocabulary() -> str:
    """One line per feature, for prompts and docs: name, shape, unit, meaning."""
    lines = []
    for f in VOCABULARY:
        shape = '(B,)' if not f.shape else f'(B, {", ".join(map(str, f.shape))})'
        unit = f' [{f.unit}]' if f.unit else ''
        lines.append(f'- {f.name} {shape}{unit}: {f.meaning}')
    return '\n'.join(lines)
