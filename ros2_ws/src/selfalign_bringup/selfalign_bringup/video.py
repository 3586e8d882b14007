"""Short MP4 videos of episodes (opencv; no rclpy).

``write_camera_video``: the driver's camera frames of the episode (the PyBullet bridge renders
a viewer camera on camera/video/image_raw for filmed episodes), at least 320 px wide, with the
episode's facts of each step overlaid (step, contact force, lift, block-goal distance, success).

``write_episode_video``: the fallback for drivers without a camera, drawn from the recorded
features alone (any driver, any observation type): a top view (x forward, y left) and a side
view (x forward, z up) of the workspace: block (orange, red while touched), goal (green disc,
5 cm success radius), end-effector trail (blue) and fingers (white, gap = finger width).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from selfalign_core import features as F
from selfalign_core.tasks import GOAL_RADIUS_M, TOUCH_FORCE_N

#: Workspace drawn, m (robot base frame).
X_RANGE = (0.2, 0.85)
Y_RANGE = (-0.35, 0.35)
Z_RANGE = (-0.02, 0.45)
PX_PER_M = 400
FPS = 10
#: Camera frames narrower than this are scaled up (a policy camera is often 84 px).
MIN_VIDEO_WIDTH_PX = 320


def _to_px(value: float, lo: float, flip: bool = False, span: float = 0.0) -> int:
    px = (value - lo) * PX_PER_M
    return int(round(span * PX_PER_M - px if flip else px))


def _draw_frame(f: dict[str, np.ndarray], t: int, label: str) -> np.ndarray:
    w_top = int((Y_RANGE[1] - Y_RANGE[0]) * PX_PER_M)
    h = int((X_RANGE[1] - X_RANGE[0]) * PX_PER_M)
    w_side = int((Z_RANGE[1] - Z_RANGE[0]) * PX_PER_M)
    frame = np.full((h + 24, w_top + w_side + 8, 3), 40, np.uint8)
    top = frame[24:24 + h, :w_top]
    side = frame[24:24 + h, w_top + 8:]
    top[:] = side[:] = (70, 70, 70)
    xspan = X_RANGE[1] - X_RANGE[0]

    def top_pt(p):  # x forward = up in the image, y left = left
        return (_to_px(p[1], Y_RANGE[0], flip=True, span=Y_RANGE[1] - Y_RANGE[0]),
                _to_px(p[0], X_RANGE[0], flip=True, span=xspan))

    def side_pt(p):  # x forward = up, z up = right
        return (_to_px(p[2], Z_RANGE[0]), _to_px(p[0], X_RANGE[0], flip=True, span=xspan))

    goal, block, ee = f['goal_pos'][t], f['block_pos'][t], f['ee_pos'][t]
    cv2.circle(top, top_pt(goal), int(GOAL_RADIUS_M * PX_PER_M), (60, 180, 60), -1)
    touched = f['contact_force'][t] > TOUCH_FORCE_N
    color = (40, 40, 230) if touched else (40, 140, 240)
    half = F.BLOCK_SIZE_M / 2
    for view, pt in ((top, top_pt), (side, side_pt)):
        a = pt(block - half)
        b = pt(block + half)
        cv2.rectangle(view, a, b, color, -1)
        trail = np.array([pt(p) for p in f['ee_pos'][:t + 1]], np.int32)
        if len(trail) > 1:
            cv2.polylines(view, [trail], False, (230, 160, 40), 1, cv2.LINE_AA)
    gap = float(f['finger_width'][t]) / 2
    for sign in (-1, 1):
        finger = ee + np.array([0.0, sign * gap, 0.0])
        cv2.circle(top, top_pt(finger), 4, (240, 240, 240), -1)
    cv2.circle(side, side_pt(ee), 4, (240, 240, 240), -1)
    cv2.line(side, side_pt((X_RANGE[0], 0, 0)), side_pt((X_RANGE[1], 0, 0)), (150, 150, 150), 1)
    text = f'{label}  {_facts(f, t)}'
    cv2.putText(frame, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return frame


def _facts(f: dict[str, np.ndarray], t: int) -> str:
    return (f't={t + 1}  force {float(f["contact_force"][t]):.2f} N  '
            f'lift {max(0.0, 100 * float(f["block_lift"][t])):.1f} cm  '
            f'goal {100 * float(f["block_goal_dist"][t]):.1f} cm')


def _write_mp4(frames: list[np.ndarray], path: str | os.PathLike) -> Path:
    """BGR frames (H, W, 3) uint8 -> MP4 at ``path`` (10 fps), written to a temp file first."""
    if not frames:
        raise ValueError('an episode with no steps cannot be rendered')
    path = Path(path)
    tmp = path.with_name(path.stem + '.tmp.mp4')
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*'mp4v'), FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f'opencv cannot write MP4 to {tmp}')
    for frame in frames:
        writer.write(frame)
    writer.release()
    os.replace(tmp, path)
    return path


def write_episode_video(packed: np.ndarray, path: str | os.PathLike, label: str = '') -> Path:
    """Render an episode's packed features (T, FEATURE_DIM) to an MP4 at ``path`` (10 fps)."""
    f = F.unpack(np.asarray(packed, np.float32))
    return _write_mp4([_draw_frame(f, t, label) for t in range(len(packed))], path)


def overlay_facts(rgb: np.ndarray, f: dict[str, np.ndarray], t: int, label: str,
                  success: bool | None = None) -> np.ndarray:
    """A BGR copy of camera frame ``rgb`` (H, W, 3) scaled to >= MIN_VIDEO_WIDTH_PX wide, with
    ``label`` and step t's facts on a dark band at the top (and the outcome once it is known)."""
    img = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, ::-1])
    h, w = img.shape[:2]
    if w < MIN_VIDEO_WIDTH_PX:
        k = -(-MIN_VIDEO_WIDTH_PX // w)
        img = cv2.resize(img, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
        h, w = img.shape[:2]
    scale = max(0.35, w / 900)
    line = int(round(22 * scale / 0.35 * 0.8))
    band = img[:2 * line + 6]
    band[:] = (band * 0.35).astype(np.uint8)
    outcome = '' if success is None else ('  SUCCESS' if success else '  fail')
    for i, text in enumerate((f'{label}{outcome}', _facts(f, t))):
        cv2.putText(img, text, (5, line * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_camera_video(frames: list[np.ndarray] | np.ndarray, packed: np.ndarray,
                       path: str | os.PathLike, label: str = '',
                       success: bool | None = None) -> Path:
    """An MP4 of an episode's camera frames (RGB (H, W, 3) uint8, in time order) with the facts
    of the matching step of ``packed`` (T, FEATURE_DIM) overlaid; frame i shows step
    round(i * T / N) when the driver sent N != T frames (a real-time camera). ``success``
    (the episode's outcome) is shown on the last frame."""
    f = F.unpack(np.asarray(packed, np.float32))
    n, steps = len(frames), len(packed)
    if not n or not steps:
        raise ValueError('an episode with no steps or no frames cannot be rendered')
    out = []
    for i, rgb in enumerate(frames):
        t = i if n == steps else min(steps - 1, int(round(i * steps / n)))
        out.append(overlay_facts(rgb, f, t, label, success if i == n - 1 else None))
    return _write_mp4(out, path)
