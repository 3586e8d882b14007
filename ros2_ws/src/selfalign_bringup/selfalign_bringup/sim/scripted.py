"""Scripted controllers for the three tasks: tests, benchmarks and sanity checks of learnability.

Stateless feedback laws over one step's quantities (a dict with at least ``ee_pos``,
``block_pos``, ``goal_pos`` (3,) m and ``finger_width`` m, i.e. ``StepResult.raw`` or one row of
``features.unpack``) returning a policy action (4,) in [-1, 1]: (dx, dy, dz) scaled by
``contract.ActionScale.max_step_m`` per step, gripper > 0 closes. They use ground truth and are
never shown to the method; they prove the tasks are solvable in the simulator as configured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from selfalign_core.contract import ActionScale

_SCALE = ActionScale()
HOVER_Z_M = 0.08    # travel height of the fingertip centre above the table
GRASP_Z_M = 0.022   # fingertip-centre height for grasping / pushing the 5 cm block
OPEN, CLOSE = -1.0, 1.0


def _move(ee: np.ndarray, target: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """EE part of an action that moves toward ``target`` (full speed when >= one max step away)."""
    return np.clip(gain * (target - ee) / _SCALE.max_step_m, -1.0, 1.0)


def _vec(d: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(d[name], dtype=float).reshape(3)


def reach_and_touch(d: Mapping[str, np.ndarray]) -> np.ndarray:
    """Touch: hover above the block, descend with the gripper open, close onto it."""
    return grasp_and_lift(d, lift=False)


def grasp_and_lift(d: Mapping[str, np.ndarray], lift: bool = True) -> np.ndarray:
    """Grasp-and-lift: hover above the block, descend open, close, then lift 10 cm."""
    ee, block = _vec(d, 'ee_pos'), _vec(d, 'block_pos')
    width = float(np.asarray(d['finger_width']).reshape(()))
    xy_err = np.linalg.norm(block[:2] - ee[:2])
    near = np.linalg.norm(block - ee) < 0.03
    if width < 0.06 and near:  # fingers closing on the block: keep closing, lift
        if not lift:
            return np.array([0.0, 0.0, 0.0, CLOSE])
        return np.append(_move(ee, np.array([ee[0], ee[1], GRASP_Z_M + 0.12])), CLOSE)
    if xy_err > 0.008:
        z = HOVER_Z_M if (xy_err > 0.02 or ee[2] > GRASP_Z_M + 0.03) else ee[2]
        return np.append(_move(ee, np.array([block[0], block[1], z]), gain=1.5), OPEN)
    if ee[2] > GRASP_Z_M + 0.004:
        return np.append(_move(ee, np.array([block[0], block[1], GRASP_Z_M]), gain=1.5), OPEN)
    return np.array([0.0, 0.0, 0.0, CLOSE])


def push_to_goal(d: Mapping[str, np.ndarray], push_speed: float = 0.5) -> np.ndarray:
    """Push: go behind the block (opposite the goal) at table height, fingers closed, and push
    it along the block-to-goal line, steering laterally; slows down near the goal.

    ``push_speed`` is the action magnitude while in contact (fraction of the max step).
    """
    ee, block, goal = _vec(d, 'ee_pos'), _vec(d, 'block_pos'), _vec(d, 'goal_pos')
    to_goal = goal[:2] - block[:2]
    dist = float(np.linalg.norm(to_goal))
    if dist < 0.01:
        return np.array([0.0, 0.0, 0.0, CLOSE])
    u = to_goal / dist
    perp = np.array([-u[1], u[0]])
    rel = ee[:2] - block[:2]
    along, across = float(rel @ u), float(rel @ perp)
    standoff = 0.065  # half block + closed-finger half footprint (~2 cm) + margin
    behind = block[:2] - u * standoff
    if along < -0.03 and abs(across) < 0.012 and ee[2] < GRASP_Z_M + 0.015:
        # In position: push through the block centre toward the goal, correcting lateral error.
        speed = min(push_speed, 0.3 + dist / 0.1)
        direction = u - perp * np.clip(across / 0.02, -1, 1) * 0.5
        dxy = direction / np.linalg.norm(direction) * speed
        dz = _move(ee, np.array([0, 0, GRASP_Z_M]))[2]
        return np.array([dxy[0], dxy[1], dz, CLOSE])
    at_behind = np.linalg.norm(ee[:2] - behind) < 0.012
    if at_behind:
        return np.append(_move(ee, np.array([behind[0], behind[1], GRASP_Z_M]), gain=1.5), CLOSE)
    if ee[2] < HOVER_Z_M - 0.02 and np.linalg.norm(rel) < 0.09:
        return np.array([0.0, 0.0, 1.0, CLOSE])  # clear the block before travelling
    z = HOVER_Z_M if np.linalg.norm(ee[:2] - behind) > 0.008 else GRASP_Z_M
    return np.append(_move(ee, np.array([behind[0], behind[1], z]), gain=1.5), CLOSE)


#: Scripted controller per task name (tasks.TASKS keys).
CONTROLLERS: dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = {
    'touch': reach_and_touch,
    'grasp_lift': grasp_and_lift,
    'push': push_to_goal,
}
