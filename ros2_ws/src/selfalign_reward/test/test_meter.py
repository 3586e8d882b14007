"""Metered reward code: every in-process evaluation is bounded, whatever θ and the batch size."""

import tracemalloc

import numpy as np
import pytest

from selfalign_core import features as F
from selfalign_reward.evaluate import RewardFunction, RewardRuntimeError
from selfalign_reward.meter import BUDGET_FACTOR, OP_FACTOR
from selfalign_reward.sandbox import restricted_globals, sample_features
from selfalign_reward.template import (
    load_reference_template,
    parse_template,
    reference_template_source,
)

HEADER = """PARAMETERS = [
    {'name': 'w', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log', 'meaning': 'weight'},
]
"""


def _fn(body: str) -> RewardFunction:
    lines = ''.join(f'    {line}\n' for line in body.splitlines())
    return RewardFunction(parse_template(HEADER + '\ndef reward(f, p):\n' + lines))


def test_an_outer_product_on_a_large_batch_is_refused_before_it_allocates():
    # Passes a 64-row trial (64 x 64 is small) but would need 100k x 100k floats (80 GB) here.
    fn = _fn("x = f['contact_force']\ny = np.sum(x[:, None] * x, axis=1)\nreturn y, {}")
    packed = np.zeros((100_000, F.FEATURE_DIM), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(RewardRuntimeError, match=r'would build an array of shape '
                                                     r'\(100000, 100000\)'):
            fn.total(packed, {'w': 1.0})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # refused before numpy allocated anything large


def test_an_expensive_branch_inside_the_range_is_bounded_in_process():
    fn = _fn("x = f['ee_pos'] + 0.0\nif p['w'] > 5.0:\n" + '    x = x * 1.0001\n' * 200
             + 'return np.sum(x, axis=-1), {}')
    packed = sample_features(5000)
    assert fn.total(packed, {'w': 1.0}).shape == (5000,)  # the cheap branch
    with pytest.raises(RewardRuntimeError, match='array elements in one evaluation'):
        fn.total(packed, {'w': 5.05})  # 200 full-size products: over the budget, refused


def test_integers_cannot_grow_without_bound():
    # Squaring an integer 40 times would need 2**40 digits; as floats it overflows at once.
    fn = _fn('a = 3\n' + 'a = a * a\n' * 40 + "return f['contact_force'] * 0.0 + a, {}")
    with pytest.raises(RewardRuntimeError, match='NaN/inf'):
        fn.total(sample_features(8), {'w': 1.0})


@pytest.mark.parametrize('task', ['touch', 'grasp_lift', 'push'])
def test_metered_reference_templates_give_the_plain_results_well_inside_the_budget(task):
    template = load_reference_template(task)
    fn = RewardFunction(template)
    scope = restricted_globals()
    exec(compile(reference_template_source(task), '<plain>', 'exec'), scope)  # noqa: S102
    packed = sample_features(512, seed=3)
    for theta in (template.initial_theta(), {s.name: s.upper for s in template.params}):
        plain = np.asarray(scope['reward'](F.unpack(packed), dict(theta))[0], np.float64)
        np.testing.assert_array_equal(fn.total(packed, theta), plain)
        batch = fn.prepare(packed, contiguous=True)
        base = max(v.size for v in batch.features.values())
        assert fn._fn.last_used <= BUDGET_FACTOR * base / 4, 'less than 4x headroom'
    # Batched θ (Metropolis–Hastings): (C, 1) parameters against (1, N*T) features is the
    # legitimate C x N*T broadcast, within the limits.
    episodes = fn.prepare(packed.reshape(8, 64, -1), contiguous=True)
    thetas = np.tile(fn.theta_array(None), (16, 1)) * np.linspace(0.9, 1.1, 16)[:, None]
    thetas = np.clip(thetas, fn.lower, fn.upper)
    many = fn.episode_returns_many(episodes, thetas)
    one = np.stack([fn.episode_returns(episodes, t) for t in thetas])
    np.testing.assert_allclose(many, one, rtol=1e-4)


def test_limits_are_per_operation_and_per_evaluation():
    assert OP_FACTOR < BUDGET_FACTOR
    # 17 stacked (B, 3) arrays exceed one operation's limit (16 x the largest input) ...
    fn = _fn("x = f['ee_pos']\ny = np.max([" + ', '.join(['x'] * 17)
             + '], axis=0)\nreturn np.sum(y, axis=-1), {}')
    with pytest.raises(RewardRuntimeError, match='would build'):
        fn.total(sample_features(1000), {'w': 1.0})
    # ... 16 do not.
    fn = _fn("x = f['ee_pos']\ny = np.max([" + ', '.join(['x'] * 16)
             + '], axis=0)\nreturn np.sum(y, axis=-1), {}')
    assert fn.total(sample_features(1000), {'w': 1.0}).shape == (1000,)
