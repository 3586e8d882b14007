"""The scripted (simulated) teacher: noise models measured over many draws, valid proposals,
failure rule; all through the same LLMClient path as a real LLM."""

import math

import numpy as np
import pytest

from selfalign_llm.backends.scripted import (
    failure_rule,
    mallows_dispersion,
    MODEL_NAME,
    noisy_ranking,
    ScriptedTeacher,
    TeacherConfig,
)
from selfalign_llm.client import LLMClient
from selfalign_llm.parse import ranks_from_groups
from selfalign_llm.transcript import Transcript
from selfalign_reward.template import load_reference_template, parse_template


def pairwise_agreement(groups, progress):
    """Fraction of strictly ordered pairs (by progress) that the ranking puts in that order."""
    ranks = ranks_from_groups(groups, len(progress))
    agree = total = 0
    for i in range(len(progress)):
        for j in range(len(progress)):
            if progress[i] > progress[j]:
                total += 1
                agree += ranks[i] < ranks[j]
    return agree / total


def kendall_tau(groups, progress):
    ranks = np.array(ranks_from_groups(groups, len(progress)))
    s = 0
    n = len(progress)
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(progress[i] - progress[j]) * np.sign(ranks[j] - ranks[i])
    return s / (n * (n - 1) / 2)


PROGRESS = np.array([0.3, 2.9, 1.2, 4.0, 0.8, 3.3, 2.0, 1.7])


def test_noiseless_teacher_ranks_by_progress():
    rng = np.random.default_rng(0)
    for _ in range(20):
        groups = noisy_ranking(PROGRESS, rng, beta=math.inf, mistake_rate=0.0)
        assert kendall_tau(groups, PROGRESS) == pytest.approx(1.0)
    # large finite beta is nearly noiseless too
    taus = [kendall_tau(noisy_ranking(PROGRESS, rng, beta=200.0), PROGRESS) for _ in range(50)]
    assert np.mean(taus) > 0.99


@pytest.mark.parametrize('eps', [0.1, 0.2, 0.35])
def test_mistake_rate_is_the_fraction_of_reversed_pairs(eps):
    rng = np.random.default_rng(1)
    agree = [pairwise_agreement(noisy_ranking(PROGRESS, rng, math.inf, eps), PROGRESS)
             for _ in range(600)]
    assert np.mean(agree) == pytest.approx(1 - eps, abs=0.02)


def test_boltzmann_pairwise_probability_is_logistic():
    # Plackett-Luce: P(i before j) = sigmoid(beta * (p_i - p_j)) for every pair.
    progress = np.array([0.0, 0.1, 0.5, 1.0, 0.3])
    beta, rng = 10.0, np.random.default_rng(2)
    wins = 0
    n = 3000
    for _ in range(n):
        ranks = ranks_from_groups(noisy_ranking(progress, rng, beta), 5)
        wins += ranks[1] < ranks[0]
    assert wins / n == pytest.approx(1 / (1 + math.exp(-beta * 0.1)), abs=0.03)


def test_ties_within_margin():
    rng = np.random.default_rng(3)
    groups = noisy_ranking(np.array([1.0, 1.02, 3.0, 0.0]), rng, math.inf, 0.0, tie_margin=0.05)
    assert groups == [[2], [1, 0], [3]]


def test_mallows_dispersion_limits():
    assert mallows_dispersion(8, 0.0) == 0.0
    assert mallows_dispersion(8, 0.5) == 1.0
    assert 0.0 < mallows_dispersion(8, 0.2) < mallows_dispersion(8, 0.3) < 1.0


def test_client_ranking_through_prompts_and_parser(touch_episodes):
    client = LLMClient(ScriptedTeacher(TeacherConfig(beta=math.inf, mistake_rate=0.0)))
    ranking = client.rank_detailed('touch', touch_episodes)
    assert ranking.ranks == [3, 2, 1, 0]
    assert ranking.model == MODEL_NAME == 'scripted-teacher (simulated)'
    assert len(ranking.descriptions) == 4 and 'task success: yes' in ranking.descriptions[3]
    rec = client.transcript.records[0]
    assert rec['role'] == 'rank' and rec['outcome'] == 'ok' and 'ranking' in rec['reply']


def test_same_seed_same_rankings(touch_episodes):
    def draws(seed):
        c = LLMClient(ScriptedTeacher(TeacherConfig(beta=2.0, mistake_rate=0.3, seed=seed)))
        return [c.rank('touch', touch_episodes) for _ in range(5)]
    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


@pytest.mark.parametrize('task', ['touch', 'grasp_lift', 'push'])
def test_proposals_validate_in_the_sandbox(task):
    # default validate = selfalign_reward.sandbox.validate_template (subprocess trial run)
    client = LLMClient(ScriptedTeacher(), Transcript(None))
    template, plan = client.propose_reward(task)
    assert "DON'T" in plan and plan.startswith('1.')
    assert template.param_names == load_reference_template(task).param_names


def test_initial_theta_reproduces_the_papers_mistakes():
    client = LLMClient(ScriptedTeacher(), validate=parse_template)  # static checks suffice
    touch, _ = client.propose_reward('touch')
    push, _ = client.propose_reward('push')
    assert touch.initial_theta()['force_threshold'] == 1.0
    assert push.initial_theta()['w_push'] == 2.0


def test_failure_rule(make_episode):
    client = LLMClient(ScriptedTeacher())
    touch = load_reference_template('touch')
    no_touch = [make_episode('touch', approach=a) for a in (0.5, 0.9, 0.99)]
    text, prop = client.analyze_failure('touch', touch, touch.initial_theta(), no_touch, 0.0, 0.9)
    assert 'threshold' in text
    assert prop['force_threshold'] == pytest.approx(0.125)  # paper: 1 N -> 0.127 N
    assert prop['w_touch'] == pytest.approx(4.0)

    push = load_reference_template('push')
    touching = [make_episode('push', approach=1.0, force=0.5, push=p) for p in (0.0, 0.1)]
    text, prop = client.analyze_failure('push', push, list(push.initial_theta().values()),
                                        touching, 0.0, 0.95)
    assert prop == {'w_push': pytest.approx(20.0)} and 'push' in text  # paper: 2.0 -> 21.05

    grasp = load_reference_template('grasp_lift')
    one_finger = [make_episode('grasp_lift', approach=1.0, force=0.5)]
    _, prop = client.analyze_failure('grasp_lift', grasp, grasp.initial_theta(), one_finger,
                                     0.0, 0.9)
    assert prop['grip_force'] < grasp.initial_theta()['grip_force']
    assert prop['w_grip'] == pytest.approx(2.0)  # 'raise the grasp bonus', as the text says
    gripping = [make_episode('grasp_lift', approach=1.0, force=0.5, both=True, lift=0.01)]
    _, prop = client.analyze_failure('grasp_lift', grasp, grasp.initial_theta(), gripping,
                                     0.0, 0.9)
    assert prop == {'w_lift': pytest.approx(12.0)}
    assert all(client.transcript.records[i]['outcome'] == 'ok' for i in range(4))


def test_failure_rule_takes_parameters_by_name_before_meaning():
    """A parameter whose *meaning* mentions touching is not taken for the touch bonus: in the
    touch stand-off template (benchmarks/templates/touch_standoff.py) the analysis used to
    double ``approach_offset`` ('..., m (0: touching)') to its upper bound instead of raising
    ``w_touch``."""
    params = [
        {'name': 'w_reach', 'value': 1.0, 'lower': 0.1, 'upper': 10.0,
         'meaning': 'weight of the approach term'},
        {'name': 'approach_offset', 'value': 0.05, 'lower': 0.0, 'upper': 0.1,
         'meaning': 'finger-to-block distance the approach term aims for, m (0: touching)'},
        {'name': 'w_touch', 'value': 2.0, 'lower': 0.1, 'upper': 20.0,
         'meaning': 'bonus per step with a finger touching the block'},
        {'name': 'force_threshold', 'value': 40.0, 'lower': 0.01, 'upper': 100.0,
         'meaning': 'contact force counted as a touch, N'},
    ]
    _, prop = failure_rule('touch', params, [{'contact_force': np.zeros(10)}])
    assert prop == {'force_threshold': pytest.approx(5.0), 'w_touch': pytest.approx(4.0)}
