"""Tests for the vectorised reward evaluation (RewardFunction)."""

import numpy as np
import pytest

from selfalign_core import features as F
from selfalign_reward.evaluate import RewardFunction, RewardRuntimeError
from selfalign_reward.sandbox import sample_features
from selfalign_reward.template import load_reference_template

THETA = {'w_reach': 2.0, 'reach_sharpness': 5.0, 'w_touch': 3.0, 'force_threshold': 0.2}


def expected_touch(f, th):
    reach = th['w_reach'] * (1 - np.tanh(th['reach_sharpness'] * f['ee_block_dist']))
    touch = th['w_touch'] * (f['contact_force'] > th['force_threshold'])
    return reach + touch, reach, touch


@pytest.fixture(scope='module')
def touch_fn():
    return RewardFunction(load_reference_template('touch'))


def test_packed_dict_and_array_theta_agree(touch_fn):
    packed = sample_features(50, seed=3)
    f = F.unpack(packed)
    want, reach, touch = expected_touch(f, THETA)
    total, terms = touch_fn(packed, THETA)
    assert total.shape == (50,) and total.dtype == np.float64
    np.testing.assert_allclose(total, want, rtol=1e-6)
    np.testing.assert_allclose(terms['reach'], reach, rtol=1e-6)
    np.testing.assert_allclose(terms['touch'], touch, rtol=1e-6)
    arr = np.array([THETA[n] for n in touch_fn.param_names])
    np.testing.assert_allclose(touch_fn(f, arr)[0], total)
    np.testing.assert_allclose(touch_fn.total(packed, THETA), total)


def test_leading_axes_are_preserved_and_episode_returns_sum(touch_fn):
    packed = sample_features(60, seed=4).reshape(3, 20, F.FEATURE_DIM)
    total, terms = touch_fn(packed, THETA)
    assert total.shape == (3, 20) and terms['touch'].shape == (3, 20)
    returns = touch_fn.episode_returns(packed, THETA)
    np.testing.assert_allclose(returns, total.sum(axis=1))
    prepared = touch_fn.prepare(packed)
    np.testing.assert_allclose(touch_fn.episode_returns(prepared, THETA), returns)
    disc = touch_fn.episode_returns(packed, THETA, discount=0.9)
    np.testing.assert_allclose(disc, (total * 0.9 ** np.arange(20)).sum(axis=1))
    per_term = touch_fn.episode_term_returns(packed, THETA)
    np.testing.assert_allclose(per_term['reach'] + per_term['touch'], returns)


def test_returns_relative_to_the_start_subtract_the_first_steps_reward(touch_fn):
    """``prepare(relative_to_start=True)``: Σ_t (r_t − r_0), one θ or many at once; an
    episode that stays in its first state returns 0."""
    packed = sample_features(60, seed=5).reshape(3, 20, F.FEATURE_DIM)
    total, _ = touch_fn(packed, THETA)
    rel = touch_fn.prepare(packed, contiguous=True, relative_to_start=True)
    want = total.sum(axis=1) - 20 * total[:, 0]
    np.testing.assert_allclose(touch_fn.episode_returns(rel, THETA), want, rtol=1e-6)
    np.testing.assert_allclose(touch_fn.episode_returns(rel, THETA, discount=0.9),
                               ((total - total[:, :1]) * 0.9 ** np.arange(20)).sum(axis=1),
                               rtol=1e-6, atol=1e-9)
    thetas = np.array([[THETA[n] for n in touch_fn.param_names], [1.0, 10.0, 2.0, 1.0]])
    many = touch_fn.episode_returns_many(rel, thetas)
    assert many.shape == (2, 3)
    np.testing.assert_allclose(many[0], want, rtol=1e-5)
    np.testing.assert_allclose(many[1], touch_fn.episode_returns(rel, thetas[1]), rtol=1e-5)
    assert touch_fn.prepare(touch_fn.prepare(packed), relative_to_start=True).start is not None
    still = np.repeat(packed[:, :1], 20, axis=1)
    np.testing.assert_allclose(touch_fn.episode_returns(
        touch_fn.prepare(still, relative_to_start=True), THETA), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match='relative to the start'):
        touch_fn.prepare(packed[0], relative_to_start=True)


def test_theta_default_and_errors(touch_fn):
    packed = sample_features(5)
    np.testing.assert_allclose(touch_fn(packed)[0], touch_fn(packed, touch_fn.template
                                                             .initial_theta())[0])
    with pytest.raises(ValueError, match='unknown names'):
        touch_fn(packed, {**THETA, 'bogus': 1.0})
    with pytest.raises(ValueError, match='expected 4'):
        touch_fn(packed, [1.0, 2.0])
    with pytest.raises(ValueError, match='columns|expected'):
        touch_fn(np.zeros((4, 7)), THETA)
    with pytest.raises(ValueError, match='needs'):
        touch_fn.episode_returns(packed, THETA)


def test_template_cannot_mutate_the_caller_batch():
    src = """PARAMETERS = [
    {'name': 'w', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log', 'meaning': 'w'},
]


def reward(f, p):
    x = f['contact_force'] * p['w']
    return x, {'x': x}
"""
    fn = RewardFunction(src)
    packed = sample_features(10)
    before = packed.copy()
    fn(packed, {'w': 3.0})
    np.testing.assert_array_equal(packed, before)


NAN_SRC = """PARAMETERS = [
    {'name': 'c', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log', 'meaning': 'c'},
]


def reward(f, p):
    x = np.log(f['contact_force']) * p['c']
    return x, {'x': x}
"""


def test_nonfinite_raise_names_theta_and_zero_policy_counts():
    packed = sample_features(64)
    zero_force = int((F.unpack(packed)['contact_force'] == 0).sum())
    assert zero_force > 0
    with pytest.raises(RewardRuntimeError, match=r'NaN/inf in \d+ of 64 rows at theta'):
        RewardFunction(NAN_SRC)(packed, {'c': 1.0})
    fn = RewardFunction(NAN_SRC, nonfinite='zero')
    total, terms = fn(packed, {'c': 1.0})
    assert np.isfinite(total).all() and np.isfinite(terms['x']).all()
    assert (total[F.unpack(packed)['contact_force'] == 0] == 0).all()
    assert fn.nonfinite_count == 2 * zero_force  # total and the term
    with pytest.raises(ValueError, match='nonfinite'):
        RewardFunction(NAN_SRC, nonfinite='ignore')


def test_runtime_exception_is_wrapped():
    src = NAN_SRC.replace("np.log(f['contact_force'])", "f['ee_pos'][:, 9]")
    with pytest.raises(RewardRuntimeError, match='IndexError'):
        RewardFunction(src)(sample_features(4), {'c': 1.0})


def test_reward_code_cannot_write_into_the_callers_features():
    """Even code that skipped the trial run: `x += ...` builds a new array (the metered rewrite)
    and `out=` is refused, so repeated evaluations agree and the caller's data stays intact."""
    from selfalign_reward.template import parse_template
    header = load_reference_template('touch').code.split('def reward')[0]
    code = header + ("def reward(f, p):\n    x = f['contact_force'] + 0.0 * p['force_threshold']"
                     "\n    x += 1000.0\n    return x, {}\n")
    fn = RewardFunction(parse_template(code))
    packed = sample_features(40, seed=1)
    before = packed.copy()
    first, _ = fn(packed, fn.theta_dict(None))
    second, _ = fn(packed, fn.theta_dict(None))
    np.testing.assert_allclose(first, F.unpack(before)['contact_force'] + 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(first, second)  # was 1000 more on each call
    batch = fn.prepare(packed.reshape(4, 10, -1), contiguous=True)
    kept = {k: v.copy() for k, v in batch.features.items()}
    fn.episode_returns_many(batch, np.ones((3, len(fn.param_names))))
    out_code = header + ("def reward(f, p):\n    x = np.clip(f['contact_force'], 0.0, 1.0, "
                         "out=f['contact_force'])\n    return x, {}\n")
    with pytest.raises(RewardRuntimeError, match='out'):
        RewardFunction(parse_template(out_code))(packed, fn.theta_dict(None))
    np.testing.assert_array_equal(packed, before)
    for k, v in batch.features.items():
        np.testing.assert_array_equal(v, kept[k])
