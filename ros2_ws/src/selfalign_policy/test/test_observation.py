"""Tests of the observation builder and the contract message conversions (no ROS graph needed)."""

import numpy as np
import pytest

from selfalign_core import contract_msgs as M
from selfalign_core import features as F
from selfalign_core.contract import FINGER_JOINTS
from selfalign_core.observation import ContractSnapshot, ObservationBuilder

ARM = [f'panda_joint{i}' for i in range(1, 8)]
NAMES = ARM + list(FINGER_JOINTS)
PERIOD_NS = 100_000_000


def snapshot(t_ns, ee=(0.5, 0.0, 0.2), block=(0.55, 0.05, 0.025), fingers=(0.03, 0.02),
             forces=(0.4, 0.1), names=NAMES, efforts=True, wrench=None):
    pos = np.zeros(len(names))
    eff = np.zeros(len(names))
    for n, q, f in zip(FINGER_JOINTS, fingers, forces):
        if n in names:
            pos[names.index(n)] = q
            eff[names.index(n)] = f
    return ContractSnapshot(
        joint_names=tuple(names), joint_positions=pos, joint_efforts=eff if efforts else None,
        wrench_force=None if wrench is None else np.asarray(wrench, float),
        ee_pos=np.asarray(ee, float), ee_quat=np.array([1.0, 0.0, 0.0, 0.0]), ee_stamp_ns=t_ns,
        block_pos=np.asarray(block, float), block_quat=np.array([0.0, 0.0, 0.0, 1.0]),
        block_stamp_ns=t_ns)


GOAL = np.array([0.6, 0.1, 0.025])


def test_reset_zero_velocity_records_start_and_goal():
    b = ObservationBuilder()
    out = b.reset(snapshot(PERIOD_NS), GOAL, block_rest_z=0.025)
    assert np.all(out.raw['ee_vel'] == 0) and np.all(out.raw['block_vel'] == 0)
    assert np.all(out.raw['action'] == 0)
    np.testing.assert_allclose(out.raw['block_start_pos'], [0.55, 0.05, 0.025], rtol=1e-6)
    np.testing.assert_allclose(out.raw['goal_pos'], GOAL, rtol=1e-6)
    assert out.observation.shape == (F.OBS_DIM,) and out.observation.dtype == np.float32
    assert out.packed.shape == (F.FEATURE_DIM,) and out.packed.dtype == np.float32
    # The builder's output is exactly compute_features -> observation_vector of its raw dict.
    feats = F.compute_features(out.raw, 0.025)
    np.testing.assert_array_equal(out.observation, F.observation_vector(feats)[0])
    np.testing.assert_array_equal(out.packed, F.pack(feats)[0])


def test_finite_difference_velocity_over_stamps():
    b = ObservationBuilder()
    b.reset(snapshot(PERIOD_NS), GOAL, 0.025)
    # 50 ms later the EE moved +1 cm in x, the block +0.5 cm in y: 0.2 and 0.1 m/s.
    out = b.step(snapshot(PERIOD_NS + 50_000_000, ee=(0.51, 0.0, 0.2),
                          block=(0.55, 0.055, 0.025)), np.array([1.0, 0, 0, -1]))
    np.testing.assert_allclose(out.raw['ee_vel'], [0.2, 0, 0], atol=1e-5)
    np.testing.assert_allclose(out.raw['block_vel'], [0, 0.1, 0], atol=1e-5)
    np.testing.assert_allclose(out.features['block_displacement'], [0.005], atol=1e-6)
    np.testing.assert_array_equal(out.raw['action'], np.float32([1, 0, 0, -1]))
    # Same stamp again (no new pose arrived): the last velocity estimate is kept, not zeroed.
    again = b.step(snapshot(PERIOD_NS + 50_000_000, ee=(0.51, 0.0, 0.2),
                            block=(0.55, 0.055, 0.025)), np.zeros(4))
    np.testing.assert_allclose(again.raw['ee_vel'], [0.2, 0, 0], atol=1e-5)


def test_fingers_looked_up_by_name_not_index():
    shuffled = [FINGER_JOINTS[1], 'panda_joint3', FINGER_JOINTS[0]] + ARM[:2]
    b = ObservationBuilder()
    out = b.reset(snapshot(PERIOD_NS, names=shuffled, fingers=(0.03, 0.01), forces=(0.7, 0.2)),
                  GOAL, 0.025)
    assert out.raw['finger_width'] == pytest.approx(0.04)
    assert out.raw['force_left'] == pytest.approx(0.7)  # panda_finger_joint1 = left pad
    assert out.raw['force_right'] == pytest.approx(0.2)


def test_wrench_fallback_splits_norm_evenly():
    b = ObservationBuilder()
    out = b.reset(snapshot(PERIOD_NS, efforts=False, wrench=(0.3, 0.4, 0.0)), GOAL, 0.025)
    assert out.raw['force_left'] == pytest.approx(0.25)
    assert out.raw['force_right'] == pytest.approx(0.25)
    assert out.features['contact_force'][0] == pytest.approx(0.25)


def test_errors_name_the_fix():
    b = ObservationBuilder()
    with pytest.raises(RuntimeError, match='reset'):
        b.step(snapshot(PERIOD_NS), np.zeros(4))
    with pytest.raises(KeyError, match='panda_finger_joint1'):
        b.reset(snapshot(PERIOD_NS, names=NAMES[:7] + ['x', 'panda_finger_joint2']), GOAL, 0.)
    with pytest.raises(ValueError, match='ee_wrench'):
        ObservationBuilder().reset(snapshot(PERIOD_NS, efforts=False), GOAL, 0.025)


# ----------------------------------------------------------------------------- contract_msgs
def test_stamps_exact_in_nanoseconds():
    t = 12_345_678_901_234_567
    assert M.stamp_ns(M.ns_to_stamp(t)) == t
    assert M.stamp_ns(M.sec_to_stamp(1.5)) == 1_500_000_000
    with pytest.raises(ValueError, match='stamp_ns'):
        M.ns_to_stamp(-1)


def test_pose_wrench_twist_gripper_roundtrip():
    pos, quat = np.array([0.1, -0.2, 0.3]), np.array([0.0, 0.6, 0.0, 0.8])
    msg = M.pose_msg(pos, quat, 5)
    assert msg.header.frame_id == 'base_link' and M.stamp_ns(msg.header.stamp) == 5
    p2, q2 = M.pose_arrays(msg)
    np.testing.assert_array_equal(p2, pos)
    np.testing.assert_array_equal(q2, quat)
    f, t = M.wrench_arrays(M.wrench_msg(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]), 7))
    np.testing.assert_array_equal(np.concatenate([f, t]), [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(M.twist_linear(M.twist_msg(np.array([0.1, 0, -0.1]), 0)),
                                  [0.1, 0, -0.1])
    assert M.gripper_width(M.gripper_msg(0.04)) == 0.04
    with pytest.raises(ValueError, match='data'):
        M.gripper_width(M.gripper_msg(0.0).__class__(data=[]))
    with pytest.raises(ValueError, match='finite'):
        M.twist_linear(M.twist_msg(np.array([np.nan, 0, 0]), 0))
    with pytest.raises(ValueError, match='2 entries.*data=\\[width_m\\]'):
        M.gripper_width(M.gripper_msg(0.0).__class__(data=[0.02, 0.02]))  # per-finger positions
    with pytest.raises(ValueError, match="frame 'tool0'"):
        M.twist_linear(M.twist_msg(np.array([0.1, 0, 0]), 0, frame_id='tool0'))
    assert M.twist_linear(M.twist_msg(np.array([0.1, 0, 0]), 0, frame_id=''))[0] == 0.1


def test_joint_state_by_name():
    js = M.joint_state_msg(NAMES, np.arange(9.0), np.zeros(9), np.arange(9.0) * 10, 3)
    assert M.finger_width(js) == pytest.approx(7.0 + 8.0)
    np.testing.assert_array_equal(M.finger_efforts(js), [70.0, 80.0])
    np.testing.assert_array_equal(M.joint_values(js, ['panda_joint3', 'panda_joint1']), [2, 0])
    with pytest.raises(KeyError, match='nope'):
        M.joint_values(js, ['nope'])
    with pytest.raises(ValueError, match='names'):
        M.joint_state_msg(NAMES, np.zeros(3), np.zeros(9), np.zeros(9), 0)
    js.effort = []
    assert not M.has_efforts(js)
    with pytest.raises(ValueError, match='effort'):
        M.finger_efforts(js)


def test_image_and_camera_info():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    msg = M.image_msg(rgb, 9)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('rgb8', 6, 5, 15)
    np.testing.assert_array_equal(M.image_array(msg), rgb)
    msg.encoding = 'bgr8'
    np.testing.assert_array_equal(M.image_array(msg), rgb[..., ::-1])
    with pytest.raises(ValueError, match='H, W, 3'):
        M.image_msg(rgb[..., 0], 0)
    k = np.array([[50.0, 0, 42], [0, 50, 42], [0, 0, 1]])
    info = M.camera_info_msg(84, 84, k, 9)
    np.testing.assert_array_equal(M.camera_k(info), k)
    assert info.p[3] == 0.0 and info.p[0] == 50.0 and info.header.frame_id.endswith('frame')


def test_snapshot_from_msgs_matches_direct_snapshot():
    s = snapshot(2 * PERIOD_NS)
    js = M.joint_state_msg(s.joint_names, s.joint_positions, np.zeros(9), s.joint_efforts,
                           s.ee_stamp_ns)
    ee = M.pose_msg(s.ee_pos, s.ee_quat, s.ee_stamp_ns)
    obj = M.pose_msg(s.block_pos, s.block_quat, s.block_stamp_ns)
    s2 = M.snapshot_from_msgs(js, ee, obj)
    a = ObservationBuilder().reset(s, GOAL, 0.025)
    b = ObservationBuilder().reset(s2, GOAL, 0.025)
    np.testing.assert_array_equal(a.observation, b.observation)
    np.testing.assert_array_equal(a.packed, b.packed)
