"""Tests of the PyBullet world (real PyBullet): determinism, bounds, reach, contact, camera."""

import numpy as np
import pytest

from selfalign_bringup.sim import camera, PandaWorld, SimConfig
from selfalign_bringup.sim.world import raw_names
from selfalign_core import features
from selfalign_core.contract import FINGER_JOINTS

DOWN = np.array([0.0, 0.0, -0.3])
OPEN, CLOSED = 0.08, 0.0


@pytest.fixture(scope='module')
def world():
    w = PandaWorld()
    try:
        yield w
    finally:
        w.close()


def _drive(w, seed, commands):
    out = [w.reset(seed)]
    for v, width in commands:
        out.append(w.step(v, width))
    return out


def _goto(w, res, target, width, steps=30):
    """Simple P-control of the commanded velocity toward target (m); returns the last result."""
    for _ in range(steps):
        v = (np.asarray(target) - res.raw['ee_pos']) / w.cfg.control_period_s
        res = w.step(v, width)
    return res


def test_raw_has_every_contract_quantity(world):
    res = world.reset(0)
    assert set(res.raw) == set(features.RAW_NAMES) - {'action'} == set(raw_names())
    assert world.joint_names[-2:] == FINGER_JOINTS
    assert len(world.joint_names) == 9
    for arr in (res.joint_positions, res.joint_velocities, res.joint_efforts):
        assert arr.shape == (9,)
    # Finger width = sum of the finger joint positions; starts open.
    assert res.raw['finger_width'] == pytest.approx(res.joint_positions[-2:].sum())
    assert res.raw['finger_width'] == pytest.approx(0.08, abs=1e-3)
    # Home pose, block resting on the table, goal at block-centre height.
    np.testing.assert_allclose(res.raw['ee_pos'], world.cfg.ee_home_m, atol=5e-3)
    assert res.block_rest_z == pytest.approx(0.025, abs=1e-3)
    assert res.raw['goal_pos'][2] == pytest.approx(res.block_rest_z)
    np.testing.assert_allclose(res.raw['block_start_pos'], res.raw['block_pos'])
    # compute_features accepts the raw dict as is (plus the policy's action).
    f = features.compute_features(dict(res.raw, action=np.zeros(4)), res.block_rest_z)
    assert f['block_lift'][0] == pytest.approx(0.0, abs=1e-4)


def test_same_seed_same_trajectory_other_seed_differs(world):
    rng = np.random.default_rng(7)
    cmds = [(rng.uniform(-0.3, 0.3, 3), float(rng.choice([OPEN, CLOSED]))) for _ in range(15)]
    a = _drive(world, 11, cmds)
    _drive(world, 3, cmds)  # an episode in between must leave no trace
    b = _drive(world, 11, cmds)
    other = PandaWorld()
    try:
        c = _drive(other, 11, cmds)
    finally:
        other.close()
    for ra, rb, rc in zip(a, b, c):
        for name in ra.raw:
            np.testing.assert_array_equal(ra.raw[name], rb.raw[name])
            np.testing.assert_array_equal(ra.raw[name], rc.raw[name])
    d = world.reset(12)
    assert not np.allclose(d.raw['block_pos'], a[0].raw['block_pos'])
    assert not np.allclose(d.raw['goal_pos'], a[0].raw['goal_pos'])


def test_spawn_boxes_and_goal_distance_hold(world):
    cfg = world.cfg
    for seed in range(20):
        res = world.reset(seed)
        xy, goal = res.raw['block_pos'][:2], res.raw['goal_pos'][:2]
        assert np.all(xy >= np.array(cfg.block_spawn_low_m) - 1e-3)
        assert np.all(xy <= np.array(cfg.block_spawn_high_m) + 1e-3)
        assert np.all(goal >= cfg.goal_spawn_low_m) and np.all(goal <= cfg.goal_spawn_high_m)
        dist = np.linalg.norm(goal - xy)
        assert cfg.goal_min_distance_m - 1e-3 <= dist <= cfg.goal_max_distance_m + 1e-3


@pytest.mark.parametrize('max_angle', [90.0, 120.0])
def test_goal_direction_stays_within_goal_max_angle(max_angle):
    w = PandaWorld(SimConfig(goal_max_angle_deg=max_angle))
    try:
        angles = []
        for seed in range(25):
            res = w.reset(seed)
            v = res.raw['goal_pos'][:2] - res.raw['block_pos'][:2]
            angles.append(np.degrees(np.arctan2(abs(v[1]), v[0])))
    finally:
        w.close()
    assert max(angles) <= max_angle + 1.0  # the block settles by < 1 mm at reset
    assert max(angles) > max_angle / 3  # still spread over the allowed directions


def test_workspace_bounds_and_speed_cap_hold(world):
    cfg = world.cfg
    lo, hi = np.array(cfg.ee_workspace_low_m), np.array(cfg.ee_workspace_high_m)
    res = world.reset(1)
    # Far too fast commands toward every corner: the target is clipped, the arm follows.
    for corner in ([1, 1, 1], [-1, -1, -1], [1, -1, -1], [-1, 1, 1]):
        prev = res.ee_target_m
        for _ in range(40):
            res = world.step(np.array(corner) * 5.0, OPEN)
            step_len = np.linalg.norm(res.ee_target_m - prev)
            assert step_len <= cfg.max_ee_speed_mps * cfg.control_period_s + 1e-9
            prev = res.ee_target_m
            assert np.all(res.ee_target_m >= lo - 1e-9) and np.all(res.ee_target_m <= hi + 1e-9)
            ee = res.raw['ee_pos']
            assert np.all(ee >= lo - 0.02) and np.all(ee <= hi + 0.02)
        np.testing.assert_allclose(res.ee_target_m, np.where(np.array(corner) > 0, hi, lo))


def test_gripper_reaches_block_height_and_velocity_is_finite_difference(world):
    res = world.reset(2)
    block = res.raw['block_pos']
    # Move over a free spot of the table (beside the block) and go all the way down.
    spot = block + np.array([0.0, 0.12 if block[1] < 0 else -0.12, 0.0])
    res = _goto(world, res, [spot[0], spot[1], 0.10], OPEN, steps=15)
    prev = res.raw['ee_pos']
    res = world.step(DOWN, OPEN)
    np.testing.assert_allclose(res.raw['ee_vel'], (res.raw['ee_pos'] - prev) / 0.1, atol=1e-9)
    assert res.raw['ee_vel'][2] < -0.1  # moving down at roughly the commanded 0.3 m/s
    for _ in range(15):
        res = world.step(DOWN, OPEN)
    # Fingertip centre below the block centre height: the pads can grasp a resting block.
    assert res.raw['ee_pos'][2] < res.block_rest_z - 0.003
    assert res.raw['ee_pos'][2] > 0.0


def test_contact_force_zero_when_far_positive_when_closing_on_block(world):
    res = world.reset(4)
    assert res.raw['force_left'] == 0.0 and res.raw['force_right'] == 0.0
    block = res.raw['block_pos']
    res = _goto(world, res, [block[0], block[1], 0.10], OPEN, steps=12)
    assert res.raw['force_left'] == 0.0 and res.raw['force_right'] == 0.0
    res = _goto(world, res, [block[0], block[1], 0.02], OPEN, steps=10)
    for _ in range(5):
        res = world.step(np.zeros(3), CLOSED)
    assert res.raw['force_left'] > 0.1 and res.raw['force_right'] > 0.1
    # Finger efforts carry the pad forces (the contract's way to publish them).
    np.testing.assert_allclose(res.joint_efforts[-2:],
                               [res.raw['force_left'], res.raw['force_right']])
    # The closed fingers stop on the 5 cm block.
    assert 0.045 < res.raw['finger_width'] < 0.06


def test_render_shape_and_camera_info_projects_the_block(world):
    res = world.reset(5)
    img = world.render_rgb(84)
    assert img.shape == (84, 84, 3) and img.dtype == np.uint8
    info = world.camera_info(84)
    assert info['frame_id'] == 'camera_optical_frame'
    assert info['width'] == info['height'] == 84
    assert info['K'].shape == (3, 3) and info['K'][0, 2] == pytest.approx(42.0)
    assert np.linalg.norm(info['quaternion']) == pytest.approx(1.0)
    # The block's projection lands on red pixels, the goal's on green ones.
    u, v = camera.project(res.raw['block_pos'][None], info)[0].astype(int)
    r, g, b = img[v, u].astype(int)
    assert r > 150 and g < 80 and b < 80, (u, v, img[v, u])
    u, v = camera.project((res.raw['goal_pos'] * [1, 1, 0])[None], info)[0].astype(int)
    r, g, b = img[v, u].astype(int)
    assert g > 100 and r < 80, (u, v, img[v, u])
    # The image changes when the arm moves.
    for _ in range(5):
        world.step(np.array([0.0, 0.3, 0.0]), OPEN)
    assert np.abs(world.render_rgb(84).astype(int) - img).sum() > 1000
    assert world.render_rgb(32).shape == (32, 32, 3)


def test_fast_table_render_gives_the_same_image(world):
    slow = PandaWorld(SimConfig(fast_table_render=False))
    try:
        for w in (world, slow):
            w.reset(6)
            for _ in range(6):
                w.step(np.array([0.1, 0.1, -0.3]), OPEN)
        fast_img, slow_img = world.render_rgb(84), slow.render_rgb(84)
    finally:
        slow.close()
    diff = np.abs(fast_img.astype(int) - slow_img.astype(int)).max(axis=-1)
    assert (diff > 3).mean() < 0.002, f'{(diff > 3).sum()} pixels differ'


def test_step_before_reset_and_bad_command_raise():
    w = PandaWorld()
    try:
        with pytest.raises(RuntimeError, match='reset'):
            w.step(np.zeros(3), OPEN)
        w.reset(0)
        with pytest.raises(ValueError, match='ee_velocity_mps'):
            w.step(np.array([0.0, np.nan, 0.0]), OPEN)
    finally:
        w.close()
    with pytest.raises(RuntimeError, match='closed'):
        w.reset(0)


@pytest.mark.parametrize('bad, field', [
    ({'substeps': 0}, 'substeps'),
    ({'block_mass_kg': -1.0}, 'block_mass_kg'),
    ({'ee_workspace_low_m': [0.8, -0.3, 0.015]}, 'ee_workspace_low_m'),
    ({'ee_workspace_low_m': [0.3, -0.3, 0.0]}, 'ee_workspace_low_m'),
    ({'robot': 'ur5'}, 'robot'),
    ({'image_size_px': 84.5}, 'image_size_px'),
    ({'max_ee_speed_mps': 'fast'}, 'max_ee_speed_mps'),
    ({'goal_min_distance_m': 0.5}, 'goal_min_distance_m'),
    ({'goal_max_angle_deg': 270.0}, 'goal_max_angle_deg'),
    ({'block_spawn_high_m': [0.6]}, 'block_spawn_high_m'),
    ({'substepz': 10}, 'substepz'),
    ({'fast_table_render': 'yes'}, 'fast_table_render'),
    ({'ik_updates_per_step': 50}, 'ik_updates_per_step'),
])
def test_sim_config_rejects_bad_values_naming_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        SimConfig.from_dict(bad)


def test_sim_config_from_dict_round_trip():
    cfg = SimConfig.from_dict({'substeps': 10, 'block_mass_kg': 0.5,
                               'ee_workspace_high_m': [0.7, 0.25, 0.35]})
    assert cfg.substeps == 10 and cfg.block_mass_kg == 0.5
    assert cfg.ee_workspace_high_m == (0.7, 0.25, 0.35)
    assert cfg.timestep_s == pytest.approx(0.01)
    assert SimConfig.from_dict({}) == SimConfig()
