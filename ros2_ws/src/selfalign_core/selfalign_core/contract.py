"""The robot contract (docs/design.md "Robot contract"): constants, pure conversions; no rclpy.

What any driver offers and accepts, and how the policy's action maps onto commands. The PyBullet
bridge, the policy node, the gym environments and the conformance suite all use this module, so a
change of scale or topic happens in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The contract's topic and service names (relative), re-exported from selfalign_core.names.
from selfalign_core.names import (  # noqa: F401
    CAMERA_IMAGE,
    CAMERA_INFO,
    CLOCK,
    EE_POSE,
    EE_WRENCH,
    EPISODE,
    GOAL_POSE,
    GRIPPER_CMD,
    JOINT_STATES,
    OBJECT_POSE,
    RESET_EPISODE,
    REWARD_SPEC,
    TWIST_CMD,
    VIDEO_IMAGE,
)

#: Frame of every pose in the contract.
BASE_FRAME = 'base_link'
CAMERA_FRAME = 'camera_optical_frame'

#: Panda finger joints; finger width = sum of their positions, effort = pad contact force (N).
FINGER_JOINTS = ('panda_finger_joint1', 'panda_finger_joint2')

ACTION_DIM = 4  # (dx, dy, dz, gripper), each in [-1, 1]


@dataclass(frozen=True)
class ActionScale:
    """How a policy action in [-1, 1]^4 becomes contract commands."""

    control_period_s: float = 0.1
    """Control period (10 Hz, docs/method.md "Task set-up")."""
    max_step_m: float = 0.03
    """End-effector displacement per control step at |action| = 1, m (docs/method.md
    "Task set-up")."""
    gripper_open_m: float = 0.08
    """Finger width commanded for 'open' (Panda hand maximum)."""
    gripper_closed_m: float = 0.0
    """Finger width commanded for 'close' (the gripper stops on the object)."""

    @property
    def max_speed_mps(self) -> float:
        return self.max_step_m / self.control_period_s


def action_to_command(action: np.ndarray, scale: ActionScale = ActionScale()
                      ) -> tuple[np.ndarray, float]:
    """Action (4,) in [-1, 1] -> (EE linear velocity (3,) m/s in the base frame, finger width m).

    The gripper is binary, open or closed (docs/method.md "Task set-up"): action[3] > 0 closes.
    """
    a = np.clip(np.asarray(action, dtype=np.float64).reshape(ACTION_DIM), -1.0, 1.0)
    velocity = a[:3] * scale.max_speed_mps
    width = scale.gripper_closed_m if a[3] > 0 else scale.gripper_open_m
    return velocity, float(width)
