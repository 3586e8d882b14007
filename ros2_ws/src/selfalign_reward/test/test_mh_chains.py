"""Multi-chain MH: the batched posterior equals the one-θ posterior; non-broadcasting templates
fall back to a single chain and still align."""

from pathlib import Path

import numpy as np

from selfalign_core import features as F
from selfalign_core import tasks
from selfalign_core.episode import stack_features
from selfalign_reward.alignment import AlignmentProblem, metropolis_hastings
from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.sandbox import validate_template
from selfalign_reward.synthetic import random_episodes
from selfalign_reward.template import load_reference_template

NOT_BROADCASTING = """
PARAMETERS = [
    {'name': 'w_push', 'init': 2.0, 'lower': 0.1, 'upper': 50.0, 'scale': 'log',
     'meaning': 'weight of the goal term'},
    {'name': 'w_reach', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log',
     'meaning': 'weight of the approach term'},
]


def reward(f, p):
    push = -max(p['w_push'], 0.1) * f['block_goal_dist']
    reach = -p['w_reach'] * f['ee_block_dist']
    return push + reach, {'push': push, 'reach': reach}
"""


def _problem(template, seed=0):
    rng = np.random.default_rng(seed)
    eps = stack_features(random_episodes('push', 12, rng))
    fn = RewardFunction(template)
    progress = tasks.progress('push', F.unpack(eps))  # what the scripted teacher ranks by
    ranks = np.argsort(np.argsort(-progress))
    return fn, eps, ranks, AlignmentProblem(fn, eps, ranks)


def test_batched_posterior_equals_one_theta_posterior():
    fn, _, _, prob = _problem(load_reference_template('push'))
    rng = np.random.default_rng(1)
    us = prob.u_center + rng.standard_normal((16, len(prob.u_center))) * prob.prior_std
    us[3] = prob.transform.u_upper + 1.0  # outside the ranges -> -inf
    many = prob.log_posterior_many(us)
    one = np.array([prob.log_posterior_u(u)[0] for u in us])
    assert np.isneginf(many[3]) and np.isneginf(one[3])
    np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-6)


def test_template_that_does_not_broadcast_is_detected_and_mh_falls_back():
    template = validate_template(NOT_BROADCASTING)
    fn, eps, ranks, prob = _problem(template)
    probe = prob.transform.to_theta(np.stack([prob.u_center, prob.u_center + 0.3]))
    assert not fn.broadcasts_over_theta(prob.batch, probe)
    res = metropolis_hastings(fn, eps, ranks, num_samples=400, burn_in=100,
                              rng=np.random.default_rng(0), chains=8)
    assert res.samples.shape == (400, 2) and 0.0 < res.acceptance_rate < 1.0
    post = [prob.log_posterior_u(prob.transform.to_u(t))[0]
            for t in (res.theta_start, res.theta_map)]
    assert post[1] >= post[0]  # the MAP is never worse than the start


def test_chains_and_single_chain_agree_on_the_posterior():
    fn, eps, ranks, _ = _problem(load_reference_template('push'), seed=2)
    multi = metropolis_hastings(fn, eps, ranks, num_samples=4000, burn_in=1000,
                                rng=np.random.default_rng(0), chains=8)
    single = metropolis_hastings(fn, eps, ranks, num_samples=4000, burn_in=1000,
                                 rng=np.random.default_rng(0), chains=1)
    assert multi.samples.shape == single.samples.shape == (4000, len(fn.param_names))
    # Same target distribution: posterior means within a few posterior std of each other.
    spread = np.maximum(multi.theta_std, single.theta_std) + 1e-9
    assert np.all(np.abs(multi.theta_mean - single.theta_mean) / spread < 1.5)
    assert multi.kendall_tau_after >= multi.kendall_tau_before


#: benchmarks/paper_table.py's 'standoff' touch template (approach aimed 5 cm short, 40 N)
STANDOFF = Path(__file__).resolve().parents[4] / 'benchmarks' / 'templates' / 'touch_standoff.py'


def test_chains_also_started_from_the_prior_centre_leave_a_flat_region():
    """A θ applied earlier can make the reward nearly constant over today's episodes (here:
    the approach term aims 10 cm out, 50 /m sharp, the touch term off); a random walk started
    there stays lost. Chains dealt out over it and the prior's centre find the mode."""
    from selfalign_reward.synthetic import synthetic_episode
    from selfalign_reward.template import parse_template

    fn = RewardFunction(parse_template(STANDOFF.read_text()))
    rng = np.random.default_rng(0)
    gaps = [0.0, 0.0] + list(np.clip(rng.normal(0.05, 0.02, 22), 0.002, 0.2))
    feats = stack_features([synthetic_episode('touch', closest_m=float(g), force_n=20.0,
                                              rng=rng) for g in gaps])
    progress = tasks.progress('touch', F.unpack(feats))
    groups = np.repeat(np.arange(3), 8)
    ranks = np.concatenate([np.argsort(np.argsort(-progress[g * 8:(g + 1) * 8]))
                            for g in range(3)])
    prepared = fn.prepare(feats, contiguous=True)
    centre = fn.theta_dict(None)
    flat = {'w_reach': 0.1, 'reach_sharpness': 50.0, 'approach_offset': 0.1, 'w_touch': 0.1,
            'force_threshold': 100.0}
    prob = AlignmentProblem(fn, prepared, ranks, centre, groups=groups)

    def map_tau(also_from):
        return [prob.tau(fn.theta_array(metropolis_hastings(
            fn, prepared, ranks, flat, prior_center=centre, groups=groups,
            rng=np.random.default_rng(seed), also_from=also_from).as_dict('map')))
            for seed in range(4)]

    assert prob.tau(fn.theta_array(centre)) < 0.0  # the template's own θ disagrees too
    assert min(map_tau([centre])) > 0.9
    assert sorted(map_tau([]))[2] < 0.0  # most walks from the flat θ stay lost
