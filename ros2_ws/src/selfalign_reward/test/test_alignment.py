"""Tests for the ranking likelihood and Metropolis–Hastings self-alignment."""

import math

import numpy as np
import pytest
from scipy.stats import rankdata

from selfalign_core import features as F
from selfalign_core import tasks
from selfalign_core.episode import stack_features
from selfalign_reward.alignment import (
    AlignmentProblem,
    log_likelihood,
    metropolis_hastings,
    normalise_grouped,
    normalise_returns,
    pair_agreement,
    ParamTransform,
    preference_pairs,
    rank_agreement,
)
from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.synthetic import random_episodes, synthetic_episode
from selfalign_reward.template import load_reference_template


def dense_ranks(score):
    """Ranks 0 = best, equal scores tie (the teacher's convention)."""
    return (rankdata(-np.asarray(score), method='dense') - 1).astype(int)


def test_preference_pairs_with_ties():
    win, lose = preference_pairs([0, 2, 1])
    assert sorted(zip(win.tolist(), lose.tolist())) == [(0, 1), (0, 2), (2, 1)]
    win, lose = preference_pairs([0, 0, 1])
    assert sorted(zip(win.tolist(), lose.tolist())) == [(0, 2), (1, 2)]
    win, _ = preference_pairs([3, 3, 3])
    assert win.size == 0


def test_likelihood_golden_numbers_by_hand():
    # Returns [3, 1, 2]: mean 2, population std sqrt(2/3) -> z = [1.224745, -1.224745, 0].
    # Ranks [0, 2, 1] -> pairs 0>1 (dz 2.449490), 0>2 (1.224745), 2>1 (1.224745).
    # log P = -log(1 + exp(-0.9 dz)):  -0.104631, -0.286769, -0.286769 -> sum -0.678169.
    win, lose = preference_pairs([0, 2, 1])
    ll = log_likelihood(np.array([3.0, 1.0, 2.0]), win, lose, beta=0.9)
    assert ll == pytest.approx(-0.678169, abs=1e-5)
    # z-scoring makes it invariant to reward scale and offset.
    assert log_likelihood(np.array([300.0, 100.0, 200.0]) + 7, win, lose) == pytest.approx(ll)
    # Unnormalised, returns [1, 0] with 1>0 and beta 1: log sigmoid(1) = -0.313262.
    w, lo = preference_pairs([0, 1])
    assert log_likelihood(np.array([1.0, 0.0]), w, lo, beta=1.0, normalise=False) == \
        pytest.approx(-0.313262, abs=1e-6)
    # Equal returns: every pair has probability 1/2.
    assert log_likelihood(np.ones(3), win, lose) == pytest.approx(3 * math.log(0.5))
    np.testing.assert_array_equal(normalise_returns(np.full(4, 5.0)), np.zeros(4))


def test_rank_agreement():
    assert rank_agreement([3.0, 2.0, 1.0], [0, 1, 2]) == pytest.approx(1.0)
    assert rank_agreement([1.0, 2.0, 3.0], [0, 1, 2]) == pytest.approx(-1.0)
    assert rank_agreement([1.0, 1.0, 1.0], [0, 1, 2]) == 0.0


def test_param_transform_round_trip_and_bounds():
    fn = RewardFunction(load_reference_template('touch').code.replace(
        "'scale': 'log',\n     'meaning': 'how sharply", "'scale': 'linear',\n     'meaning': "
        "'how sharply"))
    tr = ParamTransform(fn)
    assert list(tr.is_log) == [True, False, True, True]
    theta = np.array([0.5, 20.0, 3.0, 0.2])
    np.testing.assert_allclose(tr.to_theta(tr.to_u(theta)), theta, rtol=1e-9)
    assert tr.inside(tr.to_u(theta))
    assert not tr.inside(tr.to_u(theta) + np.array([10.0, 0, 0, 0]))  # log above upper


def touch_case(rng):
    eps = [synthetic_episode('touch', reach_step=int(rng.integers(10, 40)), force_n=force,
                             rng=rng) for force in (0.05, 0.12, 0.15, 0.2, 0.3, 0.5, 0.8, 1.5)]
    eps += [synthetic_episode('touch', reach_step=int(rng.integers(10, 40)), closest_m=gap,
                              rng=rng) for gap in (0.005, 0.02, 0.05, 0.1)]
    return stack_features(eps)


def test_mh_recovers_known_parameters():
    # Rankings fix θ only up to scale (w_reach / w_touch); the threshold is identifiable.
    rng = np.random.default_rng(2)
    fn = RewardFunction(load_reference_template('touch'))
    x = stack_features(random_episodes('touch', 16, rng))
    star = {'w_reach': 0.5, 'reach_sharpness': 3.0, 'w_touch': 8.0, 'force_threshold': 0.15}
    ranks = dense_ranks(fn.episode_returns(x, star))
    res = metropolis_hastings(fn, x, ranks, num_samples=2000, burn_in=1000,
                              rng=np.random.default_rng(1))
    assert res.kendall_tau_after > res.kendall_tau_before + 0.1
    assert res.log_likelihood_after > res.log_likelihood_before
    th = res.as_dict('map')
    assert abs(math.log(th['force_threshold'] / 0.15)) < 0.5 * abs(math.log(1.0 / 0.15))
    assert res.kendall_tau_after > 0.9
    assert 0.05 < res.acceptance_rate < 0.7
    assert res.samples.shape == (2000, 4) and res.log_posterior.shape == (2000,)
    assert np.all(res.theta_std > 0)
    lo = np.array([s.lower for s in fn.template.params])
    hi = np.array([s.upper for s in fn.template.params])
    assert np.all(res.samples >= lo) and np.all(res.samples <= hi)


def test_mh_is_deterministic_given_the_generator():
    rng = np.random.default_rng(5)
    fn = RewardFunction(load_reference_template('touch'))
    x = stack_features(random_episodes('touch', 6, rng, steps=30))
    ranks = np.arange(6)
    a = metropolis_hastings(fn, x, ranks, num_samples=200, burn_in=100,
                            rng=np.random.default_rng(7))
    b = metropolis_hastings(fn, x, ranks, num_samples=200, burn_in=100,
                            rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.theta_map, b.theta_map)


def test_paper_touch_case_force_threshold_drops_from_1n():
    """Ground-truth touch progress (touch = force > 0.1 N) vs a 1 N threshold -> lower."""
    x = touch_case(np.random.default_rng(0))
    ranks = dense_ranks(tasks.progress('touch', F.unpack(x)))
    fn = RewardFunction(load_reference_template('touch'))
    res = metropolis_hastings(fn, x, ranks, num_samples=2000, burn_in=1000,
                              rng=np.random.default_rng(0))
    assert res.theta_start[3] == 1.0
    assert res.as_dict()['force_threshold'] < 0.3  # the paper's run ended at 0.127 N
    assert res.kendall_tau_after > res.kendall_tau_before


def test_paper_push_case_push_weight_rises_above_10():
    """Episodes that move the block toward the goal are preferred -> w_push from 2.0 to >= 10."""
    rng = np.random.default_rng(0)
    eps = []
    for i in range(12):
        if i % 2 == 0:  # touches the block early and hovers there: best under the initial reward
            eps.append(synthetic_episode('push', reach_step=int(rng.integers(5, 15)),
                                         force_n=0.5, rng=rng))
        else:           # arrives later but pushes the block part of the way to the goal
            eps.append(synthetic_episode('push', reach_step=int(rng.integers(15, 30)),
                                         force_n=0.5, push_fraction=float(rng.uniform(0.3, 1)),
                                         rng=rng))
    x = stack_features(eps)
    fn = RewardFunction(load_reference_template('push'))
    star = {'w_push': 25.0, 'goal_sharpness': 10.0, 'w_lift_penalty': 1.0}
    for ranks in (dense_ranks(fn.episode_returns(x, star)),
                  dense_ranks(tasks.progress('push', F.unpack(x)))):
        res = metropolis_hastings(fn, x, ranks, num_samples=2000, burn_in=1000,
                                  rng=np.random.default_rng(0))
        assert res.theta_start[0] == 2.0
        assert res.kendall_tau_before < 0.2  # the initial reward prefers the hoverers
        assert res.as_dict()['w_push'] >= 10.0
        assert res.kendall_tau_after > 0.7


def test_prior_center_and_start_are_separate():
    rng = np.random.default_rng(2)
    fn = RewardFunction(load_reference_template('touch'))
    x = stack_features(random_episodes('touch', 6, rng, steps=20))
    start = {'w_reach': 1.0, 'reach_sharpness': 10.0, 'w_touch': 2.0, 'force_threshold': 0.2}
    res = metropolis_hastings(fn, x, np.zeros(6, int), theta0=start, num_samples=300,
                              burn_in=100, rng=np.random.default_rng(0))
    # All ties: no preferences, the posterior is the prior around the start.
    assert res.num_pairs == 0
    assert res.as_dict('start')['force_threshold'] == pytest.approx(0.2)
    assert res.as_dict('map')['force_threshold'] == pytest.approx(0.2)  # MAP of the prior
    with pytest.raises(ValueError):
        metropolis_hastings(fn, x, np.zeros(6, int), num_samples=0)



@pytest.mark.parametrize('chains', [1, 16])
def test_fixed_parameters_stay_at_their_start_and_the_rest_is_sampled(chains):
    rng = np.random.default_rng(4)
    fn = RewardFunction(load_reference_template('touch'))
    x = stack_features(random_episodes('touch', 6, rng, steps=20))
    start = {'w_reach': 1.0, 'reach_sharpness': 10.0, 'w_touch': 4.0, 'force_threshold': 0.3}
    res = metropolis_hastings(fn, x, np.arange(6), theta0=start, num_samples=400, burn_in=100,
                              rng=np.random.default_rng(0), chains=chains,
                              fixed=('w_touch', 'force_threshold'))
    i, j = fn.param_names.index('w_touch'), fn.param_names.index('force_threshold')
    assert np.all(res.samples[:, i] == 4.0) and np.all(res.samples[:, j] == 0.3)
    assert res.as_dict('map')['w_touch'] == 4.0 and res.theta_std[i] == 0.0
    assert res.theta_std[fn.param_names.index('w_reach')] > 0  # the others are sampled
    with pytest.raises(ValueError, match="unknown parameters \\['w_tuch'\\]"):
        metropolis_hastings(fn, x, np.arange(6), fixed=('w_tuch',))

def test_grouped_likelihood_is_the_sum_of_per_ranking_likelihoods():
    """Several rankings fit together: z-scored per ranking, pairs only within a ranking."""
    rng = np.random.default_rng(3)
    fn = RewardFunction(load_reference_template('touch'))
    xa = stack_features(random_episodes('touch', 5, rng, steps=20))
    xb = stack_features(random_episodes('touch', 4, rng, steps=20))
    ra, rb = np.array([0, 2, 1, 4, 3]), np.array([1, 0, 0, 2])
    theta = fn.theta_array(None)
    both = AlignmentProblem(fn, np.concatenate([xa, xb]), np.concatenate([ra, rb]), theta,
                            groups=np.array([0] * 5 + [1] * 4))
    # Pairs never cross rankings (episode 0 of ranking b is not compared with ranking a).
    assert len(both.win) == len(preference_pairs(ra)[0]) + len(preference_pairs(rb)[0])
    assert np.all((both.win < 5) == (both.lose < 5))
    expected = (AlignmentProblem(fn, xa, ra, theta).log_likelihood(theta)
                + AlignmentProblem(fn, xb, rb, theta).log_likelihood(theta))
    assert both.log_likelihood(theta) == pytest.approx(expected, rel=1e-12)
    # The many-θ path normalises per ranking too.
    u = both.transform.to_u(theta)
    many = both.log_posterior_many(np.stack([u, u]))
    assert many[0] == pytest.approx(both.log_posterior_u(u)[0], rel=1e-6)
    z = normalise_grouped(np.array([1.0, 2.0, 3.0, 5.0, 5.0]), np.array([0, 0, 0, 1, 1]))
    np.testing.assert_allclose(z, [*normalise_returns(np.array([1.0, 2.0, 3.0])), 0.0, 0.0])


def test_pair_agreement_over_given_pairs():
    r = np.array([3.0, 1.0, 2.0, 2.0])
    assert pair_agreement(r, np.array([0, 2]), np.array([1, 1])) == 1.0
    assert pair_agreement(r, np.array([1, 2]), np.array([0, 3])) == -0.5  # one wrong, one tie
    assert pair_agreement(r, np.array([], int), np.array([], int)) == 0.0
