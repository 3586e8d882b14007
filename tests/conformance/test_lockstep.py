"""Robot-contract conformance of a lockstep driver (the sim default): one command, one state.

Runs against the PyBullet bridge started in lockstep mode (camera on), or an external lockstep
driver (``SELFALIGN_DRIVER_EXTERNAL=1 SELFALIGN_DRIVER_MODE=lockstep``).
"""

import time

from contract_checks import (
    check_state_messages,
    check_topic_types,
    record_all,
    wait_matched,
    wait_quiet,
)
from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from selfalign_core import contract as C
from selfalign_core import contract_msgs as M
from selfalign_interfaces.srv import ResetEpisode

pytestmark = pytest.mark.ros

DRIVER_MODE = 'lockstep'
DRIVER_PARAMS = {'publish_camera': True, 'image_size_px': 32, 'seed': 3}


@pytest.fixture(scope='module')
def rig(driver, probe):
    """Recording probe + command publishers, matched with the driver."""
    topics = record_all(driver, probe, driver.camera)
    twist = probe.publisher(type(M.twist_msg(np.zeros(3), 0)), driver.topic(C.TWIST_CMD))
    grip = probe.publisher(type(M.gripper_msg(0.0)), driver.topic(C.GRIPPER_CMD))
    wait_matched(twist)
    wait_matched(grip)
    # Make sure there is a current state (a lockstep driver publishes once at start-up, which a
    # late subscriber misses): one zero step.
    twist.publish(M.twist_msg(np.zeros(3), 0))
    probe.wait_until(lambda: all(probe.messages(t) for t in topics), 10.0, 'a first state')
    return driver, probe, topics, twist, grip


def step(rig, v=(0.0, 0.0, 0.0), timeout_s=10.0, frame_id=C.BASE_FRAME):
    """One lockstep step: send a twist, wait for one new message on every state topic."""
    driver, probe, topics, twist, _ = rig
    before = {t: len(probe.messages(t)) for t in topics}
    twist.publish(M.twist_msg(np.asarray(v, float), 0, frame_id=frame_id))
    probe.wait_until(lambda: all(len(probe.messages(t)) > before[t] for t in topics),
                     timeout_s, f'the state after a twist on {topics}')
    return {t: probe.messages(t)[-1] for t in topics}


def by_contract(driver, msgs):
    return {name: msgs[driver.topic(name)] for name in (C.JOINT_STATES, C.EE_POSE, C.EE_WRENCH,
                                                        C.OBJECT_POSE)}


def test_topic_types(rig):
    driver, probe, *_ = rig
    check_topic_types(driver, probe, driver.camera)
    assert driver.topic(C.CLOCK) in probe.topic_types()


def test_one_command_exactly_one_state_with_one_stamp(rig):
    driver, probe, topics, twist, _ = rig
    clock = driver.topic(C.CLOCK)
    counts = wait_quiet(probe, topics + [clock])
    last_stamp = M.stamp_ns(probe.messages(topics[0])[-1].header.stamp)
    twist.publish(M.twist_msg(np.zeros(3), 0))
    probe.wait_until(lambda: all(len(probe.messages(t)) > counts[t] for t in topics + [clock]),
                     10.0, 'one state per topic')
    after = wait_quiet(probe, topics + [clock])
    for t in topics + [clock]:
        assert after[t] == counts[t] + 1, f'{t}: {after[t] - counts[t]} messages for 1 command'
    stamps = {t: M.stamp_ns(probe.messages(t)[-1].header.stamp) for t in topics}
    stamps[clock] = M.stamp_ns(probe.messages(clock)[-1].clock)
    assert len(set(stamps.values())) == 1, f'stamps differ within one step: {stamps}'
    assert stamps[topics[0]] > last_stamp, 'the stamp must advance with each step'


def test_frames_and_stamp_advance_by_one_period(rig):
    driver = rig[0]
    a = step(rig)
    b = step(rig)
    check_state_messages(driver, by_contract(driver, b))
    dt = {t: M.stamp_ns(b[t].header.stamp) - M.stamp_ns(a[t].header.stamp) for t in a}
    period = round(1e9 / driver.params.get('control_rate_hz', 10.0)) if driver.params else None
    for t, d in dt.items():
        assert d > 0, f'{t}: stamp did not advance'
        if period:
            assert d == period, f'{t}: stamp advanced {d} ns, control period is {period} ns'


def test_plus_x_twist_moves_ee_plus_x(rig):
    driver = rig[0]
    ee = driver.topic(C.EE_POSE)
    p0 = M.pose_arrays(step(rig)[ee])[0]
    for _ in range(5):
        last = step(rig, (0.1, 0.0, 0.0))
    p1 = M.pose_arrays(last[ee])[0]
    d = p1 - p0
    assert d[0] > 0.025, f'+x twist of 0.1 m/s for 5 steps moved the EE only {d} m'
    assert abs(d[1]) < 0.01 and abs(d[2]) < 0.01, f'+x twist moved the EE off-axis: {d}'
    for _ in range(5):
        step(rig, (-0.1, 0.0, 0.0))  # back towards home for the other tests


def test_refused_twists_still_get_a_state_and_do_not_move_the_arm(rig):
    """Not finite, or in another frame: the arm holds, and a lockstep client is answered."""
    ee = rig[0].topic(C.EE_POSE)
    p0 = M.pose_arrays(step(rig)[ee])[0]
    p1 = M.pose_arrays(step(rig, (float('nan'), 0.1, 0.0))[ee])[0]
    p2 = M.pose_arrays(step(rig, (0.1, 0.0, 0.0), frame_id='tool0')[ee])[0]
    assert np.abs(p1 - p0).max() < 0.003 and np.abs(p2 - p0).max() < 0.003, (p0, p1, p2)


def test_gripper_command_changes_finger_width(rig):
    driver, probe, topics, twist, grip = rig
    js = driver.topic(C.JOINT_STATES)
    w_open = M.finger_width(step(rig)[js])
    grip.publish(M.gripper_msg(0.0))
    time.sleep(0.1)  # lockstep: latched, applied with the next twist
    for _ in range(6):
        last = step(rig)
    w_closed = M.finger_width(last[js])
    assert w_closed < w_open - 0.03, f'closing: width {w_open} -> {w_closed} m'
    grip.publish(M.gripper_msg(0.08))
    time.sleep(0.1)
    for _ in range(6):
        last = step(rig)
    assert M.finger_width(last[js]) > w_closed + 0.03, 'opening did not widen the fingers'


def test_reset_same_seed_same_object_pose(rig):
    driver, probe, topics, *_ = rig
    name = driver.topic(C.RESET_EPISODE)
    if driver.process is None and name not in dict(probe.node.get_service_names_and_types()):
        pytest.skip('external driver without a reset service')
    a = probe.call(ResetEpisode, name, ResetEpisode.Request(seed=42))
    for _ in range(3):
        step(rig, (0.1, 0.1, -0.05))
    b = probe.call(ResetEpisode, name, ResetEpisode.Request(seed=42))
    c = probe.call(ResetEpisode, name, ResetEpisode.Request(seed=43))
    assert a.success and b.success and c.success, (a.message, b.message, c.message)
    assert a.seed == 42 and c.seed == 43
    pa, qa = M.pose_arrays(a.object_pose)
    pb, qb = M.pose_arrays(b.object_pose)
    np.testing.assert_allclose(pb, pa, atol=1e-6, err_msg='same seed, different object pose')
    np.testing.assert_allclose(qb, qa, atol=1e-6)
    assert np.linalg.norm(M.pose_arrays(c.object_pose)[0] - pa) > 1e-3, \
        'a different seed gave the same object pose'
    stamps = {M.stamp_ns(m.header.stamp) for m in (c.joint_state, c.ee_pose, c.ee_wrench,
                                                   c.object_pose)}
    assert len(stamps) == 1, f'reset reply stamps differ: {stamps}'
    assert c.ee_pose.header.frame_id == C.BASE_FRAME
    assert c.goal_pose.header.frame_id == C.BASE_FRAME
    assert 0.0 < c.block_rest_z < 0.1
    # The reset state also went out on the topics, with the reply's stamp.
    obj = driver.topic(C.OBJECT_POSE)
    probe.wait_until(lambda: M.stamp_ns(probe.messages(obj)[-1].header.stamp) in stamps, 5.0,
                     'the reset state on object_pose')


def test_goal_is_latched(rig):
    driver, probe, *_ = rig
    name = driver.topic(C.RESET_EPISODE)
    reply = probe.call(ResetEpisode, name, ResetEpisode.Request(seed=5))
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    time.sleep(0.2)
    late = probe.wait_for_message(PoseStamped, driver.ns + '/selfalign/goal_pose', 10.0, latched)
    np.testing.assert_allclose(M.pose_arrays(late)[0], M.pose_arrays(reply.goal_pose)[0])


def test_camera_image_and_info(rig):
    driver, probe, topics, *_ = rig
    if not driver.camera:
        pytest.skip('driver without camera')
    last = step(rig)
    img, info = last[driver.topic(C.CAMERA_IMAGE)], last[driver.topic(C.CAMERA_INFO)]
    size = driver.params.get('image_size_px')
    rgb = M.image_array(img)
    assert img.encoding == 'rgb8' and rgb.dtype == np.uint8 and rgb.ndim == 3
    if size:
        assert rgb.shape == (size, size, 3)
    assert rgb.std() > 1.0, 'camera image is blank'
    assert (info.width, info.height) == (img.width, img.height)
    assert info.header.frame_id == img.header.frame_id != ''
    assert M.stamp_ns(info.header.stamp) == M.stamp_ns(img.header.stamp)
    k = M.camera_k(info)
    assert k[0, 0] > 0 and k[1, 1] > 0 and k[2, 2] == 1.0
