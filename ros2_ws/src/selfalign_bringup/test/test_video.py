"""Episode videos: an MP4 with one frame per step that shows the block where it was."""

import cv2
import numpy as np
import pytest

from selfalign_bringup.video import write_episode_video
from selfalign_core import features as F


def _episode(steps=12):
    t = np.arange(steps)[:, None]
    raw = {
        'ee_pos': np.hstack([0.5 + 0 * t, 0.1 - 0.01 * t, 0.2 - 0.01 * t]),
        'ee_quat': np.tile([1.0, 0, 0, 0], (steps, 1)), 'ee_vel': np.zeros((steps, 3)),
        'finger_width': np.full(steps, 0.08), 'force_left': np.linspace(0, 1, steps),
        'force_right': np.zeros(steps), 'block_pos': np.tile([0.5, 0.0, 0.025], (steps, 1)),
        'block_quat': np.tile([0, 0, 0, 1.0], (steps, 1)), 'block_vel': np.zeros((steps, 3)),
        'block_start_pos': np.tile([0.5, 0.0, 0.025], (steps, 1)),
        'goal_pos': np.tile([0.6, 0.1, 0.025], (steps, 1)), 'action': np.zeros((steps, 4)),
    }
    return F.pack(F.compute_features(raw, 0.025))


def test_video_has_one_frame_per_step_and_draws_the_block(tmp_path):
    path = write_episode_video(_episode(), tmp_path / 'ep.mp4', label='eval 1')
    cap = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame)
        ok, frame = cap.read()
    assert len(frames) == 12
    # Block at (x 0.5, y 0.0) in the top view; touched (red) in the last frame.
    row = 24 + int(round((0.85 - 0.5) * 400)) + 6  # off the EE trail, inside the 20 px block
    col = int(round((0.35 - 0.0) * 400)) + 6
    b, g, r = frames[-1][row, col].astype(int)
    assert r > 150 and b < 100, (b, g, r)
    assert not list(tmp_path.glob('*.tmp.mp4'))


def test_empty_episode_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match='no steps'):
        write_episode_video(np.zeros((0, F.FEATURE_DIM), np.float32), tmp_path / 'x.mp4')
