"""Evaluation videos from the camera: the bridge films the episodes a reset asks it to, and the
monitor turns the frames stamped within an evaluation episode into an MP4 with its facts."""

import time

import cv2
import numpy as np
import pytest

from selfalign_bringup.video import MIN_VIDEO_WIDTH_PX, write_camera_video
from selfalign_core import features as F


def _packed(steps: int) -> np.ndarray:
    packed = np.zeros((steps, F.FEATURE_DIM), np.float32)
    f = F.unpack(packed)
    f['contact_force'][:] = np.linspace(0.0, 3.0, steps)  # views into packed
    return packed


def _read(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame)
        ok, frame = cap.read()
    return frames


def test_camera_video_scales_small_frames_up_and_writes_the_facts_on_them(tmp_path):
    frames = [np.full((84, 84, 3), (30, 140, 60), np.uint8) for _ in range(6)]
    path = write_camera_video(frames, _packed(6), tmp_path / 'ep.mp4', 'touch eval', True)
    out = _read(path)
    assert len(out) == 6
    h, w = out[0].shape[:2]
    assert w >= MIN_VIDEO_WIDTH_PX and h == w  # 84 px scaled by a whole factor, aspect kept
    # Below the text band the camera image is intact (BGR of the RGB fill) ...
    assert np.abs(out[0][h - 5, w // 2].astype(int) - (60, 140, 30)).max() < 25
    # ... and the band at the top is darkened, with white text written into it.
    band = out[0][:30]
    assert band.mean() < 60 and band.max() > 200
    assert not list(tmp_path.glob('*.tmp.mp4'))


def test_camera_video_maps_a_real_time_camera_onto_the_steps(tmp_path):
    frames = [np.zeros((240, 320, 3), np.uint8) for _ in range(9)]  # 9 frames, 3 steps
    out = _read(write_camera_video(frames, _packed(3), tmp_path / 'rt.mp4'))
    assert len(out) == 9 and out[0].shape[:2] == (240, 320)
    with pytest.raises(ValueError, match='no frames'):
        write_camera_video([], _packed(3), tmp_path / 'none.mp4')


def test_viewer_camera_shows_the_table_and_leaves_the_policy_camera_alone():
    from selfalign_bringup.sim import PandaWorld, SimConfig

    world = PandaWorld(SimConfig())
    try:
        world.reset(3)
        before = world.render_rgb()
        img = world.render_video(320, 240)
        assert img.shape == (240, 320, 3) and img.dtype == np.uint8
        # The table top (brown: red > green > blue) fills the lower part of the view.
        lower = img[160:].reshape(-1, 3).astype(int)
        brown = (lower[:, 0] > lower[:, 1] + 15) & (lower[:, 1] > lower[:, 2] + 10)
        assert brown.mean() > 0.5
        # The policy's fast path still sees the table painted in, unchanged.
        assert np.array_equal(world.render_rgb(), before)
    finally:
        world.close()


@pytest.mark.ros
def test_bridge_films_requested_episodes_and_monitor_writes_the_camera_video(tmp_path):
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image

    from selfalign_bringup.rundir import RunDir
    from selfalign_core import contract_msgs as cm
    from selfalign_interfaces.msg import Episode
    from selfalign_interfaces.srv import ResetEpisode
    from tests.rosproc import NodeProcess, TestNode

    steps = 4
    run = RunDir.create(tmp_path, 'touch')
    run.write_config({'task': 'touch'})
    with NodeProcess('selfalign_bringup', 'pybullet_bridge', params={'task': 'touch'}) as bridge, \
            NodeProcess('selfalign_bringup', 'monitor_node',
                        params={'run_dir': str(run.path), 'record': False}) as monitor, \
            TestNode('video_probe') as probe:
        frames = probe.record(Image, '/camera/video/image_raw', 30)
        poses = probe.record(PoseStamped, '/ee_pose', 30)
        twist = probe.publisher(cm.TwistStamped, '/servo_node/delta_twist_cmds')
        grip = probe.publisher(cm.Float64MultiArray, '/gripper_controller/commands')
        episode_pub = probe.publisher(Episode, '/selfalign/episode', 10)

        def play(film: bool) -> tuple[int, int]:
            reply = probe.call(ResetEpisode, '/selfalign/reset_episode',
                               ResetEpisode.Request(seed=7, render_video=film), timeout_s=30)
            assert reply.success, bridge.output()[-2000:]
            start = last = cm.stamp_ns(reply.ee_pose.header.stamp)
            for _ in range(steps):
                n = len(probe.messages('/ee_pose'))
                grip.publish(cm.gripper_msg(0.08))
                twist.publish(cm.twist_msg(np.array([0.0, 0.0, -0.1]), 0))
                probe.wait_until(lambda n=n, last=last: any(
                    cm.stamp_ns(p.header.stamp) > last for p in probe.messages('/ee_pose')[n:]),
                    20, 'the stepped state')
                last = max(cm.stamp_ns(p.header.stamp) for p in probe.messages('/ee_pose'))
            return start, last

        probe.wait_until(lambda: twist.get_subscription_count() > 0, 30, 'the bridge')
        # the monitor must hear the frames: wait until its video subscription is matched
        probe.wait_until(lambda: episode_pub.get_subscription_count() > 0
                         and probe.node.count_subscribers('/camera/video/image_raw') >= 2, 30,
                         "the monitor's subscriptions")
        time.sleep(0.5)  # discovery is per pair: give the bridge a moment to match it too
        start, end = play(film=True)
        probe.wait_until(lambda: len(probe.messages('/camera/video/image_raw')) >= steps + 1, 20,
                         'video frames of the filmed episode')
        stamps = sorted(cm.stamp_ns(f.header.stamp) for f in probe.messages(
            '/camera/video/image_raw'))
        assert stamps[0] == start and stamps[-1] == end  # one per state, stamped like it
        n_filmed = len(frames)
        play(film=False)
        assert len(probe.messages('/camera/video/image_raw')) == n_filmed  # not asked: no frames
        assert poses  # the unfilmed episode did step

        episode_pub.publish(Episode(
            task='touch', episode_index=0, env_step=500, evaluation=True, success=True,
            num_steps=steps, feature_dim=F.FEATURE_DIM,
            features=_packed(steps).ravel().tolist(), rewards=[0.0] * steps,
            start_stamp=cm.ns_to_stamp(start), end_stamp=cm.ns_to_stamp(end)))
        video = run.path / 'videos' / 'eval-500-0.mp4'
        probe.wait_until(video.exists, 30, f'{video}\n{monitor.output()[-2000:]}')
    out = _read(video)
    assert len(out) == steps  # frames in (start, end]: the steps, not the reset state
    assert out[0].shape[:2] == (240, 320)
