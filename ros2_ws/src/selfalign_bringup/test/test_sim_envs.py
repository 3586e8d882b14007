"""Tests of the gymnasium envs and the scripted controllers (real PyBullet, real gymnasium)."""

import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import numpy as np
import pytest

import selfalign_bringup.sim  # noqa: F401  (registers the env ids)
from selfalign_bringup.sim import ENV_IDS, SelfAlignEnv
from selfalign_bringup.sim.scripted import CONTROLLERS
from selfalign_core import features, tasks


def _scripted_episode(env, task, seed):
    """Run the scripted controller for a whole episode; returns (infos, rewards)."""
    _, info = env.reset(seed=seed)
    infos, rewards = [info], []
    done = False
    while not done:
        f = features.unpack(infos[-1]['features'][None])
        _, r, term, trunc, info = env.step(CONTROLLERS[task](f).astype(np.float32))
        infos.append(info)
        rewards.append(r)
        done = term or trunc
    return infos, rewards


@pytest.fixture(scope='module')
def touch_env():
    env = SelfAlignEnv('touch')
    try:
        yield env
    finally:
        env.close()


def test_all_ids_registered_with_right_spaces():
    assert set(ENV_IDS) <= set(gym.registry)
    env = gym.make('SelfAlign/GraspLift-v0')
    try:
        assert env.observation_space.shape == (features.OBS_DIM,)
        assert env.action_space.shape == (4,)
        assert env.unwrapped.task.name == 'grasp_lift'
    finally:
        env.close()


@pytest.mark.parametrize('env_id', ['SelfAlign/Touch-v0', 'SelfAlign/PushPixels-v0'])
def test_gymnasium_check_env_passes(env_id):
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_pixel_observation_is_one_uint8_frame():
    env = gym.make('SelfAlign/TouchPixels-v0', render_mode='rgb_array')
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (3, 84, 84) and obs.dtype == np.uint8
        assert env.observation_space.contains(obs)
        obs2, *_ = env.step(np.array([0.0, 1.0, -1.0, 0.0], np.float32))
        assert obs2.shape == (3, 84, 84) and not np.array_equal(obs, obs2)
        frame = env.render()
        np.testing.assert_array_equal(frame.transpose(2, 0, 1), obs2)
    finally:
        env.close()


def test_episode_truncates_at_task_length_with_episode_info(touch_env):
    obs, info = touch_env.reset(seed=3)
    assert obs.shape == (features.OBS_DIM,) and obs.dtype == np.float32
    assert info['features'].shape == (features.FEATURE_DIM,)
    steps = tasks.get_task('touch').episode_steps
    rng = np.random.default_rng(0)
    for t in range(steps):
        obs, r, term, trunc, info = touch_env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        assert not term and isinstance(r, float)
        assert trunc == (t == steps - 1)
    assert info['episode_features'].shape == (steps, features.FEATURE_DIM)
    np.testing.assert_array_equal(info['episode_features'][-1], info['features'])
    assert isinstance(info['is_success'], bool)
    # The reward is the oracle's on the step's own features.
    f = features.unpack(info['features'][None])
    assert r == pytest.approx(float(tasks.oracle_reward('touch', f)[0]), rel=1e-6)
    # Same seed -> same observations.
    a, _ = touch_env.reset(seed=3)
    b, _ = touch_env.reset(seed=3)
    np.testing.assert_array_equal(a, b)


def test_scripted_touch_succeeds_and_terminates_on_success():
    env = SelfAlignEnv('touch', terminate_on_success=True)
    try:
        infos, rewards = _scripted_episode(env, 'touch', seed=0)
    finally:
        env.close()
    assert infos[-1]['is_success'] is True
    assert len(rewards) < 40  # terminated early, once contact held HOLD_STEPS steps
    assert all(i['success'] for i in infos[-tasks.HOLD_STEPS:])
    assert rewards[-1] > rewards[0]


@pytest.mark.parametrize('seed', [0, 1])
def test_scripted_grasp_lift_succeeds(seed):
    env = SelfAlignEnv('grasp_lift')
    try:
        infos, _ = _scripted_episode(env, 'grasp_lift', seed=seed)
    finally:
        env.close()
    ep = features.unpack(infos[-1]['episode_features'])
    assert infos[-1]['is_success'] is True
    assert ep['block_lift'].max() > 0.08
    assert ep['both_fingers_contact_force'].max() > 1.0


@pytest.mark.parametrize('seed', [0, 5])
def test_scripted_push_moves_block_to_goal_without_lifting(seed):
    env = SelfAlignEnv('push')
    try:
        infos, _ = _scripted_episode(env, 'push', seed=seed)
    finally:
        env.close()
    ep = features.unpack(infos[-1]['episode_features'])
    start, final = ep['block_goal_dist'][0], ep['block_goal_dist'][-1]
    assert final < start - 0.05
    assert ep['block_lift'].max() < tasks.PUSH_LIFT_TOLERANCE_M
    assert infos[-1]['is_success'] is True


def test_custom_reward_fn_and_bad_arguments():
    calls = []

    def reward_fn(f):
        calls.append(f['ee_pos'].shape)
        return -f['ee_block_dist'], {'reach': -f['ee_block_dist']}

    env = SelfAlignEnv('push', reward_fn=reward_fn)
    try:
        env.reset(seed=0)
        _, r, _, _, info = env.step(np.zeros(4, np.float32))
        assert calls == [(1, 3)]
        dist = features.unpack(info['features'][None])['ee_block_dist'][0]
        assert r == pytest.approx(-float(dist))
    finally:
        env.close()
    with pytest.raises(ValueError, match='obs'):
        SelfAlignEnv('touch', obs='depth')
    with pytest.raises(ValueError, match='unknown task'):
        SelfAlignEnv('stack')
