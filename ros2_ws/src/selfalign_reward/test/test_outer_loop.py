"""Tests for the outer-loop decision logic and the reward store (pure, no ROS)."""

import numpy as np
import pytest
from scipy.stats import rankdata

from selfalign_core import features as F
from selfalign_core import tasks
from selfalign_core.episode import stack_features
from selfalign_reward.alignment import preference_pairs
from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.outer_loop import (
    check_proposal,
    OuterLoop,
    OuterLoopConfig,
    PreferenceMemory,
    refit_theta,
    select_diverse,
)
from selfalign_reward.store import RewardStore
from selfalign_reward.synthetic import synthetic_episode
from selfalign_reward.template import (
    load_reference_template,
    parse_template,
    reference_template_source,
)


def ep(i, env_step, success=False, evaluation=False, closest=0.05):
    e = synthetic_episode('touch', steps=10, reach_step=3, closest_m=closest, episode_index=i,
                          env_step=env_step)
    e.success = success
    e.evaluation = evaluation
    return e


def test_update_schedule_follows_env_steps():
    loop = OuterLoop(OuterLoopConfig(reward_update_every_steps=1000, num_ranked=3))
    for i in range(3):
        loop.add(ep(i, 300 * (i + 1)))
    assert not loop.update_due()  # 900 steps
    loop.add(ep(3, 1000, evaluation=True))
    assert loop.update_due()
    loop.mark_updated()
    assert loop.last_update_step == 1000 and not loop.update_due()
    loop.add(ep(4, 1999))
    assert not loop.update_due()
    loop.add(ep(5, 2000))
    assert loop.update_due()


def test_needs_k_training_episodes():
    loop = OuterLoop(OuterLoopConfig(reward_update_every_steps=10, num_ranked=3))
    for i in range(5):
        loop.add(ep(i, 100 + i, evaluation=True))
    assert not loop.update_due()
    with pytest.raises(ValueError, match='num_ranked'):
        OuterLoopConfig(num_ranked=1)


def test_select_diverse_spans_the_returns():
    returns = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0])
    picks = select_diverse(returns, 3)
    assert picks[0] == 2 and picks[-1] == 1  # best and worst
    assert len(set(picks)) == 3
    assert select_diverse(returns[:2], 5) == [0, 1]


def test_select_picks_best_and_worst_episodes_under_theta():
    loop = OuterLoop(OuterLoopConfig(reward_update_every_steps=1, num_ranked=3,
                                     candidate_window=10))
    gaps = [0.0, 0.2, 0.05, 0.1, 0.01]
    for i, g in enumerate(gaps):
        loop.add(ep(i, i, closest=g))
    fn = RewardFunction(load_reference_template('touch'))
    chosen = loop.select(fn, None)
    idx = [e.episode_index for e in chosen]
    assert idx[0] == 0 and idx[-1] == 1 and len(idx) == 3


def test_success_rate_prefers_evaluation_episodes_and_failure_trigger():
    loop = OuterLoop(OuterLoopConfig(success_window=4))
    for i in range(6):
        loop.add(ep(i, i, success=True))
    assert loop.success_rate() == 1.0
    loop.add(ep(6, 6, success=False, evaluation=True))
    assert loop.success_rate() == 0.0
    assert loop.needs_failure_analysis(0.8, 0.1)
    assert not loop.needs_failure_analysis(0.5, 0.1)
    assert not loop.needs_failure_analysis(0.8, 0.5)


def test_check_proposal_ranges():
    t = load_reference_template('touch')
    cur = t.initial_theta()
    theta, why = check_proposal(t, ['force_threshold'], [0.1], cur)
    assert why == '' and theta['force_threshold'] == 0.1 and theta['w_reach'] == 1.0
    theta, why = check_proposal(t, ['force_threshold'], [190.0], cur)
    assert theta is None and 'outside its range [0.01, 100.0]' in why
    theta, why = check_proposal(t, ['nope'], [1.0], cur)
    assert theta is None and 'unknown reward parameter' in why


def test_reward_store_keeps_last_good_and_checks_params():
    store = RewardStore(validate=parse_template)  # static checks suffice here
    ok, _ = store.adopt(reference_template_source('touch'), 'template:touch')
    assert ok and store.state.version == 0
    ok, msg, version = store.set_params(['force_threshold'], [0.2])
    assert ok and version == 1 and store.state.theta['force_threshold'] == 0.2
    ok, msg, version = store.set_params(['force_threshold'], [500.0])
    assert not ok and 'force_threshold = 500.0 is outside its range [0.01, 100.0]' in msg
    assert version == 1 and store.state.theta['force_threshold'] == 0.2
    ok, msg, _ = store.set_params(['bogus'], [1.0])
    assert not ok and "unknown parameter 'bogus'" in msg
    ok, msg = store.adopt('import os', 'llm:bad')
    assert not ok and 'imports are not allowed' in msg
    assert store.state.source == 'template:touch' and store.state.version == 1
    ok, _ = store.adopt(reference_template_source('push'), 'template:push', {'w_push': 7.0})
    assert ok and store.state.version == 2 and store.state.theta['w_push'] == 7.0


def test_schedule_stays_on_the_grid_across_a_resume_that_replays_steps():
    """Killed after the update at 2,000 (clock at 2,400), resumed from a 2,000 checkpoint: the
    next update is at 3,000, not as soon as K episodes arrive."""
    cfg = OuterLoopConfig(reward_update_every_steps=1000, num_ranked=3)
    first = OuterLoop(cfg)
    for i, step in enumerate((1000, 2000)):
        for j in range(3):
            first.add(ep(3 * i + j, step - 200 + 100 * j))
        assert first.update_due()
        first.mark_updated()
    first.add(ep(9, 2400))
    resumed = OuterLoop(cfg)
    resumed.load_state_dict(first.state_dict())
    for i, step in enumerate(range(2100, 3000, 100)):
        resumed.add(ep(20 + i, step))
        assert not resumed.update_due(), step
    resumed.add(ep(40, 3000))
    assert resumed.update_due() and resumed.updates == 2


# ---------------------------------------------------------------- preference memory and refit
def push_episodes(rng, n=8, env_step=0):
    """Half hover at the block (best under the initial push reward), half push it goalward."""
    out = []
    for i in range(n):
        push = float(rng.uniform(0.3, 1.0)) if i % 2 else 0.0
        out.append(synthetic_episode('push', reach_step=int(rng.integers(5, 30)), force_n=0.5,
                                     push_fraction=push, rng=rng, episode_index=i,
                                     env_step=env_step))
    return out


def progress_ranks(episodes):
    score = tasks.progress('push', F.unpack(stack_features(episodes)))
    return (rankdata(-score, method='dense') - 1).astype(int)


def refit(loop, fn, theta, episodes, ranks, seed=0):
    return refit_theta(fn, fn.template, theta, episodes, ranks, 0.5, loop, lambda tau: None,
                       mh_samples=600, mh_burn_in=300, beta=0.9, prior_width=0.5,
                       rng=np.random.default_rng(seed))


def test_refit_keeps_every_ranking_and_holds_pairs_out():
    rng = np.random.default_rng(0)
    fn = RewardFunction(load_reference_template('push'))
    loop = OuterLoop(OuterLoopConfig(num_ranked=8, heldout_fraction=0.25))
    theta = fn.theta_dict(None)
    first = refit(loop, fn, theta, eps := push_episodes(rng), progress_ranks(eps))
    # The initial push weight (2.0) prefers hovering; the ranking prefers pushing: applied.
    assert first.applied and first.heldout_after > first.heldout_before
    c = first.heldout_change
    assert c.better > c.worse and f'({c.worse} pairs worse, {c.better} better, ' in first.decision
    assert first.theta['w_push'] > 5.0 and first.theta_move > 0
    assert first.num_rankings == 1 and first.num_heldout_pairs >= 1
    pairs_one = first.num_fit_pairs + first.num_heldout_pairs
    second = refit(loop, fn, first.theta, eps := push_episodes(rng), progress_ranks(eps), seed=1)
    assert second.num_rankings == 2  # the first ranking is fitted again, not forgotten
    assert second.num_fit_pairs + second.num_heldout_pairs > pairs_one
    assert len(loop.memory) == 2


def test_refit_keeps_theta_when_held_out_agreement_does_not_improve():
    """A ranking the current θ already orders perfectly leaves θ where it is (θ used to wander
    along directions no ranking constrains)."""
    rng = np.random.default_rng(1)
    fn = RewardFunction(load_reference_template('push'))
    loop = OuterLoop(OuterLoopConfig(num_ranked=8))
    theta = {'w_push': 30.0, 'goal_sharpness': 10.0, 'w_lift_penalty': 1.0}
    eps = push_episodes(rng)
    returns = fn.episode_returns(stack_features(eps), theta)
    ranks = (rankdata(-returns, method='dense') - 1).astype(int)
    res = refit(loop, fn, theta, eps, ranks)
    assert res.heldout_before == 1.0
    assert not res.applied and res.theta == theta
    assert 'kept' in res.decision


def test_an_ordinary_refit_can_be_required_to_win_a_sign_test():
    """With ``update_gate_p`` 0.05 a re-fit that orders 2 of 6 held-out pairs better and none
    worse (p 0.25) waits; the next ranking's 5 better, 0 worse (p 0.03) passes. With 1
    (better agreement alone) the first is applied. One fixed held-out split here."""
    fn = RewardFunction(load_reference_template('push'))
    for gate, applied in ((1.0, [True]), (0.05, [False, True])):
        rng = np.random.default_rng(0)
        loop = OuterLoop(OuterLoopConfig(num_ranked=8, update_gate_p=gate, gate_folds=1))
        theta = fn.theta_dict(None)
        for k, want in enumerate(applied):
            res = refit(loop, fn, theta, eps := push_episodes(rng), progress_ranks(eps), seed=k)
            c = res.heldout_change
            assert res.heldout_after > res.heldout_before and c.worse == 0
            assert res.applied is want, res.decision
            assert (c.p_better <= 0.05) is (gate < 1.0 and want)
            assert f'sign-test p {c.p_better:.2f}' in res.decision
            theta = res.theta
    assert (c.better, c.p_better) == (5, pytest.approx(1 / 32))


def failed_push_episodes(rng, n=8):
    """Push episodes that all fail, as early in training: goals drawn 10-20 cm away (the
    scene's range), the fingers stop 0.5-10 cm short or touch and move the block up to 30 %
    of the way. The teacher ranks them by progress, not by where the goal happened to be."""
    out = []
    for i in range(n):
        touch = rng.random() < 0.4
        out.append(synthetic_episode(
            'push', goal_distance_m=float(rng.uniform(0.10, 0.20)),
            closest_m=0.0 if touch else float(rng.uniform(0.005, 0.10)),
            force_n=15.0 if touch else 0.0, reach_step=int(rng.integers(20, 80)),
            push_fraction=float(rng.uniform(0.0, 0.3)) if touch else 0.0, rng=rng,
            episode_index=i))
    return out


@pytest.mark.parametrize('relative', [False, True])
def test_rankings_of_failures_raise_the_push_weight_on_start_relative_returns(relative):
    """Four rankings of failed push episodes (mistake-free teacher). Summed over the episode,
    the goal term pays for a goal that happened to spawn near: that is noise to rankings by
    progress, and the fit on plain returns silences it (push weight down or goal term sharp;
    push paper and x0.1 cells: goal_sharpness 10 -> 23-50 at 0 % success, never learnt). On
    returns relative to each episode's start only the block's progress counts, and the same
    rankings ask for a larger push weight — the paper's correction, from rankings alone."""
    fn = RewardFunction(load_reference_template('push'))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        loop = OuterLoop(OuterLoopConfig(num_ranked=8, gate_folds=1, relative_to_start=relative))
        theta = fn.theta_dict(None)
        for k in range(4):
            res = refit(loop, fn, theta, eps := failed_push_episodes(rng), progress_ranks(eps),
                        seed=k)
        fit = res.result.as_dict('map')
        if relative:
            assert fit['w_push'] > 30.0 and 2.0 < fit['goal_sharpness'] < 15.0, fit
        else:
            assert fit['w_push'] < 20.0, fit


def test_a_cross_validated_gate_tests_every_pair_on_a_fit_made_without_it():
    """gate_folds 4: every pair of every kept ranking is a test pair once (not a fixed
    quarter), the θ applied is fit on all of them, and the decision says so."""
    fn = RewardFunction(load_reference_template('push'))
    rng = np.random.default_rng(0)
    loop = OuterLoop(OuterLoopConfig(num_ranked=8, gate_folds=4))
    theta = fn.theta_dict(None)
    res = refit(loop, fn, theta, eps := push_episodes(rng), ranks := progress_ranks(eps))
    every = len(preference_pairs(ranks)[0])  # all of them, held-out quarter included
    assert res.folds == 4 and res.num_heldout_pairs == res.num_fit_pairs == every
    assert res.applied and res.heldout_after > res.heldout_before, res.decision
    assert '(4-fold cross-validated)' in res.decision
    with pytest.raises(ValueError, match='gate_folds'):
        OuterLoopConfig(gate_folds=0)


def test_preference_memory_bounded_and_saved(tmp_path):
    rng = np.random.default_rng(2)
    mem = PreferenceMemory(max_rankings=2, heldout_fraction=0.25)
    for k, steps in enumerate((10, 12, 8)):
        eps = [synthetic_episode('touch', steps=steps, reach_step=3, rng=rng) for _ in range(4)]
        mem.add(stack_features(eps), np.array([0, 1, 2, 3]), rng, env_step=k)
    assert len(mem) == 2 and [r.env_step for r in mem.rankings] == [1, 2]
    feats, ranks, groups, fit, held = mem.arrays()
    assert feats.shape[:2] == (8, 12)  # shorter episodes padded with their last row
    np.testing.assert_array_equal(feats[4:, 8:], np.repeat(feats[4:, 7:8], 4, axis=1))
    assert groups.tolist() == [0] * 4 + [1] * 4
    assert len(fit[0]) + len(held[0]) == 12 and len(held[0]) == 4  # 6 pairs each, 25 % -> 2
    assert np.all(groups[held[0]] == groups[held[1]])
    mem.save(tmp_path / 'prefs.npz')
    back = PreferenceMemory(max_rankings=2)
    back.load(tmp_path / 'prefs.npz')
    for a, b in zip(back.arrays(), mem.arrays()):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(x, y)


def test_applied_failure_analysis_moves_the_prior_centre_and_survives_a_resume():
    """Touch rankings that agree with the reward and say nothing about the force threshold: the
    LLM's proposed threshold is kept (it is the new prior centre), across a resume too."""
    fn = RewardFunction(load_reference_template('touch'))
    loop = OuterLoop(OuterLoopConfig(num_ranked=5))
    eps = [synthetic_episode('touch', closest_m=g, episode_index=i)
           for i, g in enumerate([0.3, 0.2, 0.1, 0.05, 0.02])]
    theta = fn.theta_dict(None)
    res = refit_theta(fn, fn.template, theta, eps, np.array([4, 3, 2, 1, 0]), 0.0, loop,
                      lambda tau: ('threshold too high', ['force_threshold'], [0.125]),
                      mh_samples=400, mh_burn_in=200, beta=0.9, prior_width=0.5,
                      rng=np.random.default_rng(0))
    assert res.failure_analysis and res.proposal_used and res.applied
    assert res.theta['force_threshold'] < 0.5
    assert loop.prior_center['force_threshold'] == 0.125
    again = OuterLoop(OuterLoopConfig(num_ranked=5))
    again.load_state_dict(loop.state_dict())
    assert again.prior_center == loop.prior_center



def touch_late_or_hover():
    """Four episodes that press (20 N) from steps 60/70/80/90 and four that hover 1-5 cm from
    the block from step 5; ``THETA0_RANKS``: their order under the initial touch reward."""
    press = [synthetic_episode('touch', closest_m=0.0, force_n=20.0, reach_step=r,
                               episode_index=i) for i, r in enumerate((60, 70, 80, 90))]
    hover = [synthetic_episode('touch', closest_m=g, reach_step=5, episode_index=4 + i)
             for i, g in enumerate((0.01, 0.02, 0.03, 0.05))]
    return press + hover


#: returns under the initial θ: 133 106 78 50 | 86 77 68 51
THETA0_RANKS = np.array([0, 1, 3, 7, 2, 4, 5, 6])
#: the hovering episodes first: pulls the contact bonus down and the approach weight up if free
HOVER_FIRST = np.array([4, 5, 6, 7, 0, 1, 2, 3])


def analysis_refit(proposal, ranks, seed=0, **cfg):
    fn = RewardFunction(load_reference_template('touch'))
    eps = touch_late_or_hover()
    loop = OuterLoop(OuterLoopConfig(num_ranked=len(eps), **cfg))
    return fn, refit_theta(fn, fn.template, fn.theta_dict(None), eps, ranks, 0.0, loop,
                           lambda tau: ('threshold too high', list(proposal),
                                        list(proposal.values())),
                           mh_samples=600, mh_burn_in=300, beta=0.9, prior_width=0.5,
                           rng=np.random.default_rng(seed))


def test_a_failure_analysis_sets_the_values_it_proposes_and_mh_fits_the_rest():
    """touch x10, seed 1 of the paper table: the analysis said 'raise the contact bonus' (2 -> 4)
    and the free fit moved it to 1.35 under rankings that did not see touching pay; the policy
    then hovered (0 % through 30k). The proposal's values are now held; the rest is fitted."""
    fn, res = analysis_refit({'force_threshold': 1.25, 'w_touch': 4.0}, HOVER_FIRST,
                             agreement_threshold=-1.0)  # asked whatever τ (trigger tested above)
    assert res.proposal_used and res.held == ('w_touch', 'force_threshold')
    fit = res.result.as_dict('map')
    assert fit['w_touch'] == 4.0 and fit['force_threshold'] == 1.25
    assert np.all(res.result.samples[:, fn.param_names.index('w_touch')] == 4.0)
    assert fit['w_reach'] != 1.0 or fit['reach_sharpness'] != 10.0  # the others still move


@pytest.mark.parametrize('w_touch, worse, p, applied', [(3.0, 2, 0.25, True),
                                                        (20.0, 5, 1 / 32, False)])
def test_a_failure_analysis_is_held_back_only_when_significantly_worse(w_touch, worse, p,
                                                                       applied):
    """Rankings that agree with the reward (τ 1, success 0: the analysis is asked). Raising the
    contact bonus to 3 reverses 2 of the 28 held-out pairs (sign test p 0.25: applied; the old
    gate kept θ whenever held-out agreement fell at all); to 20 it reverses 5 (p 0.03: kept)."""
    _, res = analysis_refit({'w_touch': w_touch}, THETA0_RANKS, heldout_fraction=0.99)
    assert res.failure_analysis and res.tau_before == pytest.approx(1.0)
    assert res.num_heldout_pairs == 28
    c = res.heldout_change
    assert (c.worse, c.better) == (worse, 0)
    assert c.p_worse == pytest.approx(p)
    assert res.applied is applied and res.heldout_after < res.heldout_before
    assert (res.theta['w_touch'] == w_touch) is applied
    _, never = analysis_refit({'w_touch': w_touch}, THETA0_RANKS, heldout_fraction=0.99,
                              analysis_gate_p=0.0)
    assert never.applied


@pytest.mark.parametrize('ranks, heldout_fraction, gate_p, fitted', [
    (THETA0_RANKS, 0.25, 0.05, False),  # the fit orders no held-out pair better
    (HOVER_FIRST, 0.75, 0.05, True),    # 21 held-out pairs: better on 5-8, worse on none
    (HOVER_FIRST, 0.25, 1.0, True),     # better agreement alone, when the gate asks no more
    (HOVER_FIRST, 0.25, 0.05, False),   # better on 2 of 7 pairs: not significant
])
def test_the_fit_of_the_other_parameters_must_beat_the_analysis_alone(ranks, heldout_fraction,
                                                                      gate_p, fitted):
    """The MAP of the parameters the analysis did not name goes along only when it passes the
    ordinary gate against the analysis's θ alone — better held-out agreement, and more pairs
    better than worse at ``update_gate_p``; otherwise the analysis's values go alone (touch ×10
    seed 1: the free fit raised w_reach 1 -> 3.6 at no gain in agreement, and that θ alone,
    fixed from the start, stayed at 0 % success through 19k steps; push ×0.1 seed 1: fits on
    7 and 65 held-out pairs, better on 0 and 1 of them, took goal_sharpness 10 -> 22 -> 50)."""
    proposal = {'force_threshold': 1.25, 'w_touch': 4.0}
    fn, res = analysis_refit(proposal, ranks, agreement_threshold=-1.0,
                             heldout_fraction=heldout_fraction, update_gate_p=gate_p)
    alone = {**fn.theta_dict(None), **proposal}
    assert res.applied and res.fitted_rest is fitted
    assert res.result.as_dict('map')['w_reach'] > 2.0  # what the free fit wanted either way
    if fitted:
        assert res.theta == res.result.as_dict('map') and 'the rest fitted' in res.decision
    else:
        assert res.theta == alone and 'the rest unchanged' in res.decision


def test_an_analysis_that_restates_theta_is_not_an_update():
    """Push's analyses proposed w_push 50 when θ had it already, and the table counted 10-20
    such no-moves as applied updates (and measured 'drops after' them). Rankings the current θ
    orders perfectly (the fitted rest cannot win) and an analysis naming θ's own value: θ is
    kept, the update is not applied, the decision says why; the prior centre still moves."""
    fn = RewardFunction(load_reference_template('touch'))
    theta = {**fn.theta_dict(None), 'w_touch': 4.0}
    loop = OuterLoop(OuterLoopConfig(num_ranked=8, heldout_fraction=0.99,
                                     agreement_threshold=-1.0))
    res = refit_theta(fn, fn.template, theta, touch_late_or_hover(), THETA0_RANKS, 0.0, loop,
                      lambda tau: ('keep the bonus', ['w_touch'], [4.0]),
                      mh_samples=300, mh_burn_in=100, beta=0.9, prior_width=0.5,
                      rng=np.random.default_rng(0))
    assert res.proposal_used and not res.fitted_rest
    assert res.unchanged and not res.applied and res.theta == theta and res.theta_move == 0.0
    assert 'kept the current θ (the candidate is the current θ)' in res.decision
    assert loop.prior_center['w_touch'] == 4.0


def test_an_applied_analysis_moves_the_prior_centre_by_its_own_values_only():
    """The prior is the LLM's belief: values fitted to rankings since must not enter it (they
    did, and each analysis ratcheted w_reach further: 1 -> 3.6 -> 9.8 on touch ×10 seed 1)."""
    fn = RewardFunction(load_reference_template('touch'))
    loop = OuterLoop(OuterLoopConfig(num_ranked=8, heldout_fraction=0.99,
                                     agreement_threshold=-1.0))
    fitted_before = {**fn.theta_dict(None), 'w_reach': 3.6, 'reach_sharpness': 5.5}
    res = refit_theta(fn, fn.template, fitted_before, touch_late_or_hover(), THETA0_RANKS, 0.0,
                      loop, lambda tau: ('raise the bonus', ['w_touch'], [4.0]),
                      mh_samples=300, mh_burn_in=100, beta=0.9, prior_width=0.5,
                      rng=np.random.default_rng(0))
    assert res.failure_analysis and res.applied
    assert loop.prior_center == {**fn.theta_dict(None), 'w_touch': 4.0}
