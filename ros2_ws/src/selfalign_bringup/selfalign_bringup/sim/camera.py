"""Pinhole maths of the fixed scene camera: ROS CameraInfo K and the optical-frame pose.

Pure numpy (no pybullet). The optical frame follows REP-103: z forward, x right, y down.
"""

from __future__ import annotations

import math

import numpy as np

#: Clipping planes of the OpenGL projection, m.
NEAR_M = 0.05
FAR_M = 3.0


def intrinsics(size_px: int, fov_deg: float) -> np.ndarray:
    """K (3, 3) float64 of a square image ``size_px`` wide with vertical field of view ``fov_deg``.

    Principal point at the image centre (size/2, size/2); fx = fy = (size/2) / tan(fov/2).
    """
    f = (size_px / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    c = size_px / 2.0
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def optical_rotation(eye: np.ndarray, target: np.ndarray,
                     up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Rotation (3, 3) whose columns are the optical frame's x (right), y (down), z (forward)."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, float))
    norm = np.linalg.norm(right)
    if norm < 1e-9:
        raise ValueError('camera looks straight along the up axis; move camera_eye_m sideways')
    right /= norm
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> quaternion (x, y, z, w), w >= 0."""
    m = np.asarray(r, float)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def camera_info(size_px: int, fov_deg: float, eye: np.ndarray, target: np.ndarray,
                frame_id: str = 'camera_optical_frame') -> dict:
    """Everything a CameraInfo message and a static camera transform need.

    Returns dict: K (3, 3), P (3, 4) = [K | 0], width, height, frame_id, distortion_model
    'plumb_bob' with D = zeros(5), position (3,) m and quaternion (x, y, z, w) of the optical
    frame in the base frame.
    """
    k = intrinsics(size_px, fov_deg)
    rot = optical_rotation(eye, target)
    return {
        'K': k,
        'P': np.concatenate([k, np.zeros((3, 1))], axis=1),
        'D': np.zeros(5),
        'distortion_model': 'plumb_bob',
        'width': int(size_px),
        'height': int(size_px),
        'frame_id': frame_id,
        'position': np.asarray(eye, float).copy(),
        'quaternion': matrix_to_quaternion(rot),
    }


def project(points_m: np.ndarray, info: dict) -> np.ndarray:
    """Base-frame points (N, 3) -> pixel coordinates (N, 2) (u right, v down) with ``info``."""
    rx, ry, rz, rw = info['quaternion']
    rot = np.array([
        [1 - 2 * (ry * ry + rz * rz), 2 * (rx * ry - rw * rz), 2 * (rx * rz + rw * ry)],
        [2 * (rx * ry + rw * rz), 1 - 2 * (rx * rx + rz * rz), 2 * (ry * rz - rw * rx)],
        [2 * (rx * rz - rw * ry), 2 * (ry * rz + rw * rx), 1 - 2 * (rx * rx + ry * ry)],
    ])
    cam = (np.asarray(points_m, float) - info['position']) @ rot  # R^T (p - t), row-wise
    uvw = cam @ info['K'].T
    return uvw[:, :2] / uvw[:, 2:3]
