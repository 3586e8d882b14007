"""Tests for the outer-loop decision logic and the reward store (pure, no ROS)."""

import numpy as np
import pytest

from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.outer_loop import check_proposal, OuterLoop, OuterLoopConfig, select_diverse
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
    theta, why = check_proposal(t, ['force_threshold'], [9.0], cur)
    assert theta is None and 'outside its range [0.01, 5.0]' in why
    theta, why = check_proposal(t, ['nope'], [1.0], cur)
    assert theta is None and 'unknown reward parameter' in why


def test_reward_store_keeps_last_good_and_checks_params():
    store = RewardStore(validate=parse_template)  # static checks suffice here
    ok, _ = store.adopt(reference_template_source('touch'), 'template:touch')
    assert ok and store.state.version == 0
    ok, msg, version = store.set_params(['force_threshold'], [0.2])
    assert ok and version == 1 and store.state.theta['force_threshold'] == 0.2
    ok, msg, version = store.set_params(['force_threshold'], [50.0])
    assert not ok and 'force_threshold = 50.0 is outside its range [0.01, 5.0]' in msg
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
