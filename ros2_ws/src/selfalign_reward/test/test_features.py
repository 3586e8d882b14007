"""Tests of the feature vocabulary (features.py) and task judgements (tasks.py)."""

import numpy as np
import pytest

from selfalign_core import features as F
from selfalign_core import tasks

DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # gripper pointing down: 180 deg about x (xyzw)
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def raw_step(ee=(0.5, 0.0, 0.2), width=0.08, block=(0.5, 0.0, 0.025), goal=(0.6, 0.1, 0.025),
             start=None, fl=0.0, fr=0.0, ee_quat=DOWN, block_quat=IDENTITY):
    return {
        'ee_pos': np.array(ee), 'ee_quat': np.array(ee_quat), 'ee_vel': np.zeros(3),
        'finger_width': np.array(width), 'force_left': np.array(fl), 'force_right': np.array(fr),
        'block_pos': np.array(block), 'block_quat': np.array(block_quat),
        'block_vel': np.zeros(3), 'block_start_pos': np.array(start if start else block),
        'goal_pos': np.array(goal), 'action': np.zeros(4),
    }


def stack(steps):
    return {k: np.stack([s[k] for s in steps]) for k in steps[0]}


def episode(steps, rest_z=0.025):
    return F.unpack(F.pack(F.compute_features(stack(steps), rest_z)))


def test_layout_covers_every_feature_once():
    cols = np.zeros(F.FEATURE_DIM, dtype=int)
    for sl in F.LAYOUT.values():
        cols[sl] += 1
    assert (cols == 1).all()
    assert set(F.LAYOUT) == set(F.FEATURE_NAMES)


def test_pack_unpack_roundtrip_and_batched_shapes():
    f = F.compute_features(stack([raw_step(), raw_step(ee=(0.4, 0.1, 0.3))]), 0.025)
    back = F.unpack(F.pack(f))
    for name in F.FEATURE_NAMES:
        np.testing.assert_array_equal(back[name], f[name])
    assert back['ee_pos'].shape == (2, 3) and back['contact_force'].shape == (2,)
    row = F.unpack(F.pack(f)[0])  # a single unbatched row
    assert row['contact_force'].shape == () and row['ee_pos'].shape == (3,)
    episodes = F.unpack(np.zeros((4, 7, F.FEATURE_DIM), np.float32))
    assert episodes['goal_pos'].shape == (4, 7, 3) and episodes['block_lift'].shape == (4, 7)


def test_shape_to_shape_distance_is_zero_when_pad_touches_block_side():
    # Open gripper (8 cm) centred over a 5 cm block: centre distance 0, but neither pad is on
    # the block surface -> the shape distance is the 1.5 cm gap to the block side.
    f = F.compute_features(raw_step(ee=(0.5, 0.0, 0.025), width=0.08), 0.025)
    assert f['ee_block_center_dist'][0] == pytest.approx(0.0, abs=1e-6)
    assert f['ee_block_dist'][0] == pytest.approx(0.015, abs=1e-5)
    closed_on_block = F.compute_features(raw_step(ee=(0.5, 0.0, 0.025), width=0.05), 0.025)
    assert closed_on_block['ee_block_dist'][0] == pytest.approx(0.0, abs=1e-6)
    above = F.compute_features(raw_step(ee=(0.5, 0.0, 0.15), width=0.0), 0.025)
    assert above['ee_block_dist'][0] == pytest.approx(0.10, abs=1e-5)  # block top at 5 cm


def test_box_distance_respects_block_rotation():
    yaw45 = np.array([0.0, 0.0, np.sin(np.pi / 8), np.cos(np.pi / 8)])
    point = np.array([[0.5 + 0.03, 0.0, 0.025]])
    box = np.array([[0.5, 0.0, 0.025]])
    straight = F.point_box_distance(point, box, IDENTITY[None])[0]
    rotated = F.point_box_distance(point, box, yaw45[None])[0]
    assert straight == pytest.approx(0.005, abs=1e-6)
    assert rotated == pytest.approx(0.0, abs=1e-6)  # the corner reaches 3.5 cm out


def test_compute_features_names_missing_raw_quantity():
    r = raw_step()
    del r['goal_pos']
    with pytest.raises(KeyError, match='goal_pos'):
        F.compute_features(r, 0.025)
    r = raw_step()
    r['ee_pos'] = np.zeros(2)
    with pytest.raises(ValueError, match='ee_pos'):
        F.compute_features(r, 0.025)


def test_observation_vector_dimension_and_offsets():
    f = F.compute_features(stack([raw_step()]), 0.025)
    obs = F.observation_vector(f)
    assert obs.shape == (1, F.OBS_DIM) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[0, -9:-6], f['block_pos'][0] - f['ee_pos'][0])
    np.testing.assert_allclose(obs[0, -6:-3], f['goal_pos'][0] - f['block_pos'][0])
    pp = F.push_point(f['block_pos'], f['goal_pos'])[0]
    np.testing.assert_allclose(obs[0, -3:], pp - f['ee_pos'][0], atol=1e-6)


def test_push_point_sits_behind_the_block_opposite_the_goal():
    block = np.array([[0.5, 0.0, 0.025], [0.5, 0.0, 0.025], [0.5, 0.0, 0.025]])
    goal = np.array([[0.7, 0.0, 0.025], [0.5, -0.3, 0.025], [0.5, 0.0, 0.025]])
    pp = F.push_point(block, goal)
    np.testing.assert_allclose(pp[0], [0.5 - F.PUSH_POINT_OFFSET_M, 0.0, 0.025], atol=1e-7)
    np.testing.assert_allclose(pp[1], [0.5, F.PUSH_POINT_OFFSET_M, 0.025], atol=1e-7)
    np.testing.assert_allclose(pp[2], block[2])  # block on the goal: no direction, its centre
    behind, above = 0.5 - F.PUSH_POINT_OFFSET_M, 0.125
    f = F.compute_features(stack([raw_step(ee=(behind, 0.0, 0.025), goal=(0.7, 0.0, 0.025)),
                                  raw_step(ee=(behind, 0.0, above), goal=(0.7, 0.0, 0.025))]),
                           0.025)
    np.testing.assert_allclose(f['ee_push_point_dist'], [0.0, 0.1], atol=1e-6)


def test_vocabulary_text_lists_every_feature():
    text = F.describe_vocabulary()
    assert all(f'- {name} ' in text for name in F.FEATURE_NAMES)


def test_touch_needs_three_consecutive_steps_above_threshold():
    far = raw_step()
    touching = raw_step(ee=(0.5, 0.0, 0.06), fl=0.5)
    weak = raw_step(ee=(0.5, 0.0, 0.06), fl=0.05)
    two = episode([far, touching, touching, far, touching, far])
    three = episode([far, touching, touching, touching, far])
    weak3 = episode([weak, weak, weak])
    assert not tasks.episode_success('touch', two)
    assert tasks.episode_success('touch', three)
    assert not tasks.episode_success('touch', weak3)
    assert tasks.progress('touch', three) > tasks.progress('touch', two) > tasks.progress(
        'touch', episode([far, far]))


def test_grasp_lift_needs_both_fingers_and_height():
    lifted = raw_step(ee=(0.5, 0.0, 0.09), block=(0.5, 0.0, 0.085), fl=2.0, fr=2.0,
                      start=(0.5, 0.0, 0.025))
    one_finger = raw_step(ee=(0.5, 0.0, 0.09), block=(0.5, 0.0, 0.085), fl=2.0, fr=0.0,
                          start=(0.5, 0.0, 0.025))
    assert tasks.episode_success('grasp_lift', episode([lifted] * 3))
    assert not tasks.episode_success('grasp_lift', episode([one_finger] * 5))


def test_push_success_at_end_and_never_lifted():
    start = (0.5, 0.0, 0.025)
    at_goal = raw_step(block=(0.59, 0.09, 0.025), goal=(0.6, 0.1, 0.025), start=start)
    lifted = raw_step(block=(0.55, 0.05, 0.09), goal=(0.6, 0.1, 0.025), start=start)
    away = raw_step(block=(0.45, -0.05, 0.025), goal=(0.6, 0.1, 0.025), start=start)
    begin = raw_step(block=start, goal=(0.6, 0.1, 0.025))
    assert tasks.episode_success('push', episode([begin, at_goal]))
    assert not tasks.episode_success('push', episode([begin, lifted, at_goal]))
    assert not tasks.episode_success('push', episode([begin, at_goal, away]))
    assert tasks.progress('push', episode([begin, at_goal])) > tasks.progress(
        'push', episode([begin, away]))


def test_oracle_reward_prefers_contact_and_unknown_task_is_named():
    far = F.compute_features(stack([raw_step()]), 0.025)
    touch = F.compute_features(stack([raw_step(ee=(0.5, 0.0, 0.06), fl=0.5)]), 0.025)
    assert tasks.oracle_reward('touch', touch)[0] > tasks.oracle_reward('touch', far)[0]
    with pytest.raises(ValueError, match='grasp_lift'):
        tasks.get_task('lift')
