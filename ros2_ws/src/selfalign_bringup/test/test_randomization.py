"""Domain randomisation: seeded draws, world dynamics hooks, sensing on reported values only."""

from pathlib import Path

import numpy as np
import pytest

from selfalign_bringup.sim import SelfAlignEnv
from selfalign_bringup.sim.randomization import (
    ActuationModel,
    apply_to_world,
    RandomizationConfig,
    RandomizedEnv,
    sample_episode,
    SensorModel,
)
from selfalign_core import features as F

YAML = Path(__file__).resolve().parents[1] / 'config' / 'domain_randomization.yaml'
ON = RandomizationConfig(enabled=True)


def test_yaml_defaults_equal_the_dataclass_and_are_off():
    cfg = RandomizationConfig.from_yaml(YAML)
    assert cfg == RandomizationConfig()
    assert not cfg.enabled
    push = RandomizationConfig.from_yaml(YAML, task='push')
    assert push.block_friction_scale == (0.8, 1.2)
    with pytest.raises(ValueError, match='unknown key'):
        RandomizationConfig.from_dict({'block_mas_scale': [1, 2]})
    with pytest.raises(ValueError, match='block_restitution'):
        RandomizationConfig.from_dict({'block_restitution': [0.5, 0.1]})
    with pytest.raises(ValueError, match='object_pose_drop_prob'):
        RandomizationConfig.from_dict({'object_pose_drop_prob': [0.0, 1.0]})


def test_draws_are_seeded_and_inside_the_ranges():
    a, b, c = (sample_episode(ON, s) for s in (5, 5, 6))
    assert a == b and a != c
    for s in range(50):
        e = sample_episode(ON, s)
        assert 0.7 * 0.3 <= e.block_mass_kg <= 1.5 * 0.3
        assert 0.0 <= e.command_latency_s <= 0.15
        assert all(abs(x) <= 0.02 for x in e.camera_eye_shift_m)
        assert -0.03 <= min(e.contact_force_bias_n) <= max(e.contact_force_bias_n) <= 0.03


def test_world_hooks_apply_per_episode_and_reset_restores_nominal():
    env = SelfAlignEnv('touch', obs='state')
    try:
        nominal = env.world.reset(1) and env.world.dynamics()
        e = sample_episode(ON, 3)
        apply_to_world(env.world, e)
        d = env.world.dynamics()
        assert d['block_mass_kg'] == pytest.approx(e.block_mass_kg)
        assert d['block_lateral_friction'] == pytest.approx(e.block_lateral_friction)
        assert d['finger_force_n'] == pytest.approx(e.finger_force_n)
        eye = env.world.camera_info()['position']
        assert np.allclose(eye, np.add(env.cfg.camera_eye_m, e.camera_eye_shift_m))
        env.world.reset(1)
        assert env.world.dynamics() == nominal
    finally:
        env.close()


def _rollout(env, seed, steps=25):
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for k in range(steps):
        a = np.array([0.6, 0.3 * np.sin(k / 3), -0.5, 1.0 if k > 12 else -1.0], np.float32)
        out.append(env.step(a))
    return out


def test_disabled_wrapper_passes_everything_through():
    plain, wrapped = SelfAlignEnv('touch'), RandomizedEnv(SelfAlignEnv('touch'), None)
    try:
        for x, y in zip(_rollout(plain, 4, 10), _rollout(wrapped, 4, 10)):
            assert np.array_equal(x[0], y[0])
    finally:
        plain.close()
        wrapped.close()


def test_sensing_noise_changes_reports_never_the_simulated_state():
    sensing = ON.disabled_except('joint_position_noise_rad', 'ee_position_noise_m',
                                 'object_position_noise_m', 'object_orientation_noise_rad',
                                 'object_pose_drop_prob', 'contact_force_noise_n',
                                 'contact_force_bias_n')
    plain, noisy = SelfAlignEnv('touch'), RandomizedEnv(SelfAlignEnv('touch'), sensing)
    try:
        a, b = _rollout(plain, 8), _rollout(noisy, 8)
        for x, y in zip(a[1:], b[1:]):
            # same true physics (sensing only), different reports
            assert np.array_equal(x[4]['features'], y[4]['true_features'])
            assert not np.array_equal(y[4]['features'], y[4]['true_features'])
            assert not np.array_equal(x[0], y[0])
            assert x[4]['success'] == y[4]['success']
        assert a[-1][4].get('is_success') == b[-1][4].get('is_success')
        # the report is close to the truth (mm, a few 0.01 N)
        f, t = F.unpack(b[-1][4]['features']), F.unpack(b[-1][4]['true_features'])
        assert np.abs(f['ee_pos'] - t['ee_pos']).max() < 0.01
        assert np.abs(f['block_pos'] - t['block_pos']).max() < 0.02
    finally:
        plain.close()
        noisy.close()


def test_full_randomisation_is_repeatable_by_seed_and_changes_the_physics():
    env = RandomizedEnv(SelfAlignEnv('touch'), ON)
    try:
        r1, r2, r3 = _rollout(env, 11), _rollout(env, 11), _rollout(env, 12)
        for x, y in zip(r1, r2):
            assert np.array_equal(x[0], y[0])
        assert not np.array_equal(r1[-1][0], r3[-1][0])
        assert r1[0][1]['randomization'] == sample_episode(ON, 11, env.unwrapped.cfg)
    finally:
        env.close()
    plain = SelfAlignEnv('touch')
    try:  # actuation (latency, noise, jitter) moves the true arm differently
        p = _rollout(plain, 11)
        assert not np.array_equal(p[-1][4]['features'], r1[-1][4]['true_features'])
    finally:
        plain.close()


def test_object_pose_drops_hold_the_last_report_and_its_velocity():
    e = sample_episode(ON.disabled_except('object_pose_drop_prob'), 0)
    e = e.__class__(**{**e.__dict__, 'object_pose_drop_prob': 0.5})
    sm = SensorModel(e, 0.1, np.random.default_rng(0))
    raw = {'ee_pos': np.zeros(3), 'block_pos': np.zeros(3), 'block_quat': np.array([0, 0, 0, 1.]),
           'finger_width': 0.08, 'force_left': 0.0, 'force_right': 0.0}
    sm.perturb_raw(raw, reset=True)
    fresh_flags = []
    for k in range(1, 200):
        raw = dict(raw, block_pos=np.array([0.01 * k, 0, 0]))
        out, fresh = sm.perturb_raw(raw, reset=False)
        fresh_flags.append(fresh)
        if not fresh:
            assert out['block_pos'][0] < 0.01 * k  # the previous report
        else:
            assert out['block_pos'][0] == pytest.approx(0.01 * k)
    assert 0.35 < 1 - np.mean(fresh_flags) < 0.65


def test_image_brightness_contrast_and_actuation_latency():
    e = sample_episode(ON, 0)
    e = e.__class__(**{**e.__dict__, 'image_brightness': 10.0, 'image_contrast': 2.0,
                       'action_noise': 0.0, 'control_period_jitter': 0.0,
                       'command_latency_s': 0.05})
    img = np.array([[[128, 100, 250]]], np.uint8)
    assert SensorModel(e, 0.1).image(img).tolist() == [[[138, 82, 255]]]
    act = ActuationModel(e, 0.1, 1.0, -1.0)
    v, g = act.command(np.array([1.0, 0, 0]), 1.0)
    assert v[0] == pytest.approx(0.5) and g == 1.0  # half a period of the previous (zero)


@pytest.mark.ros
def test_bridge_randomizes_what_it_publishes_seeded_per_episode():
    """The real bridge process: randomize true changes the reported object pose (noise), the
    same seed gives the same report, the goal (not a sensor) is untouched."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
    from selfalign_core import contract_msgs as cm
    from selfalign_interfaces.srv import ResetEpisode
    from tests.rosproc import NodeProcess, TestNode

    def resets(params):
        with NodeProcess('selfalign_bringup', 'pybullet_bridge', params=params) as bridge, \
                TestNode('rand_probe') as probe:
            try:
                out = [probe.call(ResetEpisode, '/selfalign/reset_episode',
                                  ResetEpisode.Request(seed=s), timeout_s=30) for s in (5, 5)]
            except TimeoutError:
                raise AssertionError(bridge.output()[-3000:]) from None
        return [(cm.pose_arrays(r.object_pose)[0], cm.pose_arrays(r.goal_pose)[0],
                 cm.pose_arrays(r.ee_pose)[0]) for r in out]

    plain = resets({})
    noisy = resets({'randomize': True})
    assert np.array_equal(noisy[0][0], noisy[1][0])  # seeded: same episode, same report
    assert not np.array_equal(noisy[0][0], plain[0][0])  # tracker noise on the report
    assert np.abs(noisy[0][0] - plain[0][0]).max() < 0.02
    assert np.array_equal(noisy[0][1], plain[0][1])  # the goal is not a sensor reading
    assert not np.array_equal(noisy[0][2], plain[0][2])  # EE pose noise


@pytest.mark.ros
def test_bridge_with_a_missing_randomization_file_exits_2_naming_the_parameter(tmp_path):
    from tests.rosproc import NodeProcess

    missing = tmp_path / 'nope.yaml'
    with NodeProcess('selfalign_bringup', 'pybullet_bridge',
                     params={'randomize': True, 'randomization_file': str(missing)}) as bridge:
        code = bridge.wait(60)
        out = bridge.output()
    assert code == 2, out[-2000:]
    assert 'randomization_file' in out and str(missing) in out and 'Traceback' not in out
