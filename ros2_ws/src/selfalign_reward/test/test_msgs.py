"""Tests for EpisodeRecord and the message conversions."""

import numpy as np
import pytest

from selfalign_core import features as F
from selfalign_core.episode import EpisodeRecord, stack_features
from selfalign_interfaces.msg import Episode
from selfalign_reward.msgs import (
    episode_from_msg,
    episode_to_msg,
    FEATURE_COLUMN_NAMES,
    spec_from_msg,
    spec_to_msg,
)
from selfalign_reward.synthetic import synthetic_episode
from selfalign_reward.template import load_reference_template, TemplateError


def test_episode_round_trip():
    ep = synthetic_episode('push', steps=20, push_fraction=0.5, force_n=0.3,
                           rng=np.random.default_rng(0), episode_index=4, env_step=2000)
    ep.seed = 11
    ep.reward_version = 3
    ep.worker = 'arm_1'
    ep.rewards = np.arange(20, dtype=np.float32)
    msg = episode_to_msg(ep)
    assert isinstance(msg, Episode)
    assert msg.feature_dim == F.FEATURE_DIM and len(msg.feature_names) == F.FEATURE_DIM
    assert msg.feature_names[:3] == ['ee_pos.x', 'ee_pos.y', 'ee_pos.z']
    back = episode_from_msg(msg)
    assert msg.worker == back.worker == 'arm_1'
    np.testing.assert_array_equal(back.features, ep.features)
    np.testing.assert_array_equal(back.actions, ep.actions)
    np.testing.assert_array_equal(back.rewards, ep.rewards)
    np.testing.assert_array_equal(back.success_flags, ep.success_flags)
    assert (back.task, back.seed, back.episode_index, back.env_step, back.reward_version) == \
        ('push', 11, 4, 2000, 3)
    np.testing.assert_allclose(back.feature_dict()['block_goal_dist'],
                               ep.feature_dict()['block_goal_dist'])
    assert len(FEATURE_COLUMN_NAMES) == F.FEATURE_DIM


def test_episode_from_msg_rejects_mismatched_fields():
    msg = episode_to_msg(synthetic_episode('touch', steps=5))
    msg.feature_dim = F.FEATURE_DIM + 1
    with pytest.raises(ValueError, match='feature_dim'):
        episode_from_msg(msg)
    msg = episode_to_msg(synthetic_episode('touch', steps=5))
    msg.num_steps = 6
    with pytest.raises(ValueError, match='Episode.features has'):
        episode_from_msg(msg)


def test_episode_record_validates_shapes_and_stacks_with_padding():
    with pytest.raises(ValueError, match='features has shape'):
        EpisodeRecord('touch', np.zeros((4, 3)))
    with pytest.raises(ValueError, match='actions has 3 steps'):
        EpisodeRecord('touch', np.zeros((4, F.FEATURE_DIM)), actions=np.zeros((3, 4)))
    a = synthetic_episode('touch', steps=10)
    b = synthetic_episode('touch', steps=6)
    x = stack_features([a, b])
    assert x.shape == (2, 10, F.FEATURE_DIM)
    np.testing.assert_array_equal(x[1, 6:], np.repeat(b.features[-1:], 4, axis=0))


def test_spec_round_trip_and_tamper_detection():
    t = load_reference_template('push')
    theta = {'w_push': 12.0, 'goal_sharpness': 10.0, 'w_lift_penalty': 1.0}
    msg = spec_to_msg(t, theta, version=5, source='template:push', task='push')
    assert msg.param_names == ['w_push', 'goal_sharpness', 'w_lift_penalty']
    assert msg.param_lower[0] == 0.1 and msg.param_scale[0] == 'log'
    t2, th2, version, source = spec_from_msg(msg)
    assert t2 == t and th2 == theta and version == 5 and source == 'template:push'
    msg.sha256 = 'f' * 64
    with pytest.raises(ValueError, match='sha256'):
        spec_from_msg(msg)
    msg = spec_to_msg(t, theta)
    msg.code = msg.code.replace("f['ee_push_point_dist']", "f['nonexistent']")
    msg.sha256 = ''
    with pytest.raises(TemplateError, match='unknown feature'):
        spec_from_msg(msg)
    with pytest.raises(ValueError, match='misses'):
        spec_to_msg(t, {'w_push': 1.0})
