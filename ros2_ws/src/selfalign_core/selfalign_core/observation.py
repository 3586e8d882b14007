"""Observation builder: latest robot-contract quantities -> raw features, features, observation.

Pure numpy, driver-agnostic: the policy node feeds it what arrived on the contract topics
(``/joint_states``, ``/ee_pose``, ``/ee_wrench``, ``/object_pose``, the goal), the gym envs and
tests feed it arrays straight from the simulator; both get the same numbers.

Per control step it builds the ``features.RAW`` dict:

* ``ee_pos``, ``ee_quat``  from the EE pose (fingertip centre, base frame);
* ``ee_vel``, ``block_vel``  by finite difference of the poses over their **own stamps**
  (integer ns); zero at reset; when a pose has not been updated since the last step (same stamp)
  the previous velocity is kept;
* ``finger_width`` = sum of the finger joint positions (``contract.FINGER_JOINTS``, by name);
* ``force_left`` / ``force_right`` = |effort| of the left / right finger joint (the sim reports
  each pad's contact normal force, N, as its effort).  A driver without finger efforts may offer
  only ``/ee_wrench``: then each finger gets **half the wrench force norm** (a wrist F/T sensor
  cannot tell the fingers apart, nor see a pure squeeze — prefer efforts for grasping);
* ``block_pos``, ``block_quat`` from the object pose; ``block_start_pos`` recorded at reset;
* ``goal_pos`` from the reset reply / latched goal; ``action`` = the last action the policy sent
  (zeros at reset).

then ``features.compute_features`` and ``features.observation_vector``.  Shapes: raw vectors (3,)
or (4,), scalars (); ``features`` dict batched with B = 1; ``packed`` (FEATURE_DIM,) float32;
``observation`` (OBS_DIM,) float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from selfalign_core import features as F
from selfalign_core.contract import ACTION_DIM, FINGER_JOINTS


@dataclass
class ContractSnapshot:
    """The latest value of each contract quantity at one control step (numpy, SI units).

    Stamps are integer nanoseconds of the message that carried the value (sim time in the bridge).
    """

    joint_names: Sequence[str]
    """Joint names of ``/joint_states`` (must include ``contract.FINGER_JOINTS``)."""
    joint_positions: np.ndarray
    """(N,) rad / m, aligned with ``joint_names``."""
    ee_pos: np.ndarray
    """(3,) m fingertip centre, base frame."""
    ee_quat: np.ndarray
    """(4,) (x, y, z, w)."""
    ee_stamp_ns: int
    """Stamp of the EE pose."""
    block_pos: np.ndarray
    """(3,) m block centre, base frame."""
    block_quat: np.ndarray
    """(4,) (x, y, z, w)."""
    block_stamp_ns: int
    """Stamp of the object pose."""
    joint_efforts: np.ndarray | None = None
    """(N,) N·m / N aligned with ``joint_names``, or None when the driver offers no efforts."""
    wrench_force: np.ndarray | None = None
    """(3,) N fingertip contact force from ``/ee_wrench``; used only without finger efforts."""


class ContractObservation(NamedTuple):
    """What the builder returns each step."""

    raw: dict[str, np.ndarray]
    """``features.RAW`` quantities of this step, unbatched float32."""
    features: dict[str, np.ndarray]
    """Full vocabulary, batched with B = 1, float32."""
    packed: np.ndarray
    """(FEATURE_DIM,) float32, ``features.pack`` of ``features``."""
    observation: np.ndarray
    """(OBS_DIM,) float32 state observation."""


class ObservationBuilder:
    """Turns successive ``ContractSnapshot``s into features and state observations.

    Call ``reset`` with the initial snapshot of an episode (it records ``block_start_pos``, the
    goal and the block's rest height), then ``step`` once per control step with the latest
    snapshot and the action that led to it.
    """

    def __init__(self, finger_joints: Sequence[str] = FINGER_JOINTS) -> None:
        if len(finger_joints) != 2:
            raise ValueError(f'finger_joints must name 2 joints (left, right), got '
                             f'{list(finger_joints)}')
        self.finger_joints = tuple(finger_joints)
        self._goal: np.ndarray | None = None
        self._block_rest_z = 0.0
        self._block_start: np.ndarray | None = None
        self._prev_ee: tuple[int, np.ndarray] | None = None
        self._prev_block: tuple[int, np.ndarray] | None = None
        self._ee_vel = np.zeros(3)
        self._block_vel = np.zeros(3)
        self._index_cache: tuple[tuple[str, ...], tuple[int, int]] | None = None

    @property
    def block_rest_z(self) -> float:
        """Block centre height at rest, m (from the reset)."""
        return self._block_rest_z

    @property
    def goal_pos(self) -> np.ndarray | None:
        """(3,) goal of the current episode, or None before the first reset."""
        return self._goal

    def reset(self, snapshot: ContractSnapshot, goal_pos: np.ndarray,
              block_rest_z: float) -> ContractObservation:
        """Start an episode from its initial snapshot; velocities and action are zero."""
        self._goal = np.asarray(goal_pos, dtype=np.float64).reshape(3).copy()
        self._block_rest_z = float(block_rest_z)
        self._block_start = np.asarray(snapshot.block_pos, dtype=np.float64).reshape(3).copy()
        self._prev_ee = None
        self._prev_block = None
        self._ee_vel = np.zeros(3)
        self._block_vel = np.zeros(3)
        return self._build(snapshot, np.zeros(ACTION_DIM))

    def step(self, snapshot: ContractSnapshot, action: np.ndarray) -> ContractObservation:
        """Observation after ``action`` (4,) in [-1, 1] was applied and ``snapshot`` received."""
        if self._goal is None or self._block_start is None:
            raise RuntimeError('ObservationBuilder.step called before reset(); call reset with '
                               'the initial snapshot of the episode first')
        return self._build(snapshot, action)

    # ------------------------------------------------------------------ internals
    def _finger_indices(self, names: Sequence[str]) -> tuple[int, int]:
        key = tuple(names)
        if self._index_cache is None or self._index_cache[0] != key:
            try:
                idx = (key.index(self.finger_joints[0]), key.index(self.finger_joints[1]))
            except ValueError:
                raise KeyError(f'finger joints {list(self.finger_joints)} not in joint names '
                               f'{list(key)}; remap the driver joint names onto the contract '
                               'names (contract.FINGER_JOINTS)') from None
            self._index_cache = (key, idx)
        return self._index_cache[1]

    @staticmethod
    def _velocity(prev: tuple[int, np.ndarray] | None, stamp_ns: int, pos: np.ndarray,
                  last: np.ndarray) -> np.ndarray:
        if prev is None:
            return np.zeros(3)
        dt_ns = int(stamp_ns) - prev[0]
        if dt_ns <= 0:  # no new pose since the last step: keep the last estimate
            return last
        return (pos - prev[1]) / (dt_ns / 1e9)  # exact int ns -> correctly rounded s

    def _forces(self, snapshot: ContractSnapshot, i_left: int, i_right: int
                ) -> tuple[float, float]:
        eff = snapshot.joint_efforts
        if eff is not None and len(eff) == len(snapshot.joint_names):
            return abs(float(eff[i_left])), abs(float(eff[i_right]))
        if snapshot.wrench_force is not None:
            half = 0.5 * float(np.linalg.norm(snapshot.wrench_force))
            return half, half
        raise ValueError('no contact force: the snapshot has neither finger joint efforts nor a '
                         'wrench; publish finger efforts on /joint_states or a WrenchStamped on '
                         '/ee_wrench')

    def _build(self, s: ContractSnapshot, action: np.ndarray) -> ContractObservation:
        i_left, i_right = self._finger_indices(s.joint_names)
        pos = np.asarray(s.joint_positions, dtype=np.float64)
        ee_pos = np.asarray(s.ee_pos, dtype=np.float64).reshape(3)
        block_pos = np.asarray(s.block_pos, dtype=np.float64).reshape(3)
        self._ee_vel = self._velocity(self._prev_ee, s.ee_stamp_ns, ee_pos, self._ee_vel)
        self._block_vel = self._velocity(self._prev_block, s.block_stamp_ns, block_pos,
                                         self._block_vel)
        self._prev_ee = (int(s.ee_stamp_ns), ee_pos)
        self._prev_block = (int(s.block_stamp_ns), block_pos)
        f_left, f_right = self._forces(s, i_left, i_right)
        a = np.asarray(action, dtype=np.float64).reshape(ACTION_DIM)
        f32 = np.float32
        raw = {
            'ee_pos': ee_pos.astype(f32),
            'ee_quat': np.asarray(s.ee_quat, dtype=f32).reshape(4),
            'ee_vel': self._ee_vel.astype(f32),
            'finger_width': f32(pos[i_left] + pos[i_right]),
            'force_left': f32(f_left),
            'force_right': f32(f_right),
            'block_pos': block_pos.astype(f32),
            'block_quat': np.asarray(s.block_quat, dtype=f32).reshape(4),
            'block_vel': self._block_vel.astype(f32),
            'block_start_pos': self._block_start.astype(f32),
            'goal_pos': self._goal.astype(f32),
            'action': a.astype(f32),
        }
        feats = F.compute_features(raw, self._block_rest_z)
        return ContractObservation(raw, feats, F.pack(feats)[0],
                                   F.observation_vector(feats)[0])
