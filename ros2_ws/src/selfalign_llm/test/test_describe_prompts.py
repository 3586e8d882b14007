"""Trajectory descriptions (facts, determinism) and the filled-in prompts."""

import numpy as np
import pytest

from selfalign_core.features import FEATURE_DIM, FEATURE_NAMES
from selfalign_llm import prompts
from selfalign_llm.describe import describe_episode


def test_description_states_the_facts(make_episode):
    ep = make_episode('push', approach=1.0, force=0.5, push=1.0)
    text = describe_episode(ep)
    assert 'contact: max force 0.50 N' in text
    assert 'block-to-goal distance: start 14.1 cm' in text and 'end 0.0 cm' in text
    assert 'block moved: end 14.1 cm' in text
    assert text.endswith('task success: yes')
    no_touch = describe_episode(make_episode('push', approach=0.3))
    assert 'contact: none' in no_touch and 'task success: no' in no_touch
    assert 'closest finger-to-block distance: 21.' in no_touch  # 30 cm * (1 - 0.3)


def test_description_is_deterministic_and_input_form_independent(make_episode):
    ep = make_episode('grasp_lift', approach=1.0, force=0.5, both=True, lift=0.07, close=True)
    a = describe_episode(ep)
    assert a == describe_episode(ep)
    assert a == describe_episode(ep.features, task='grasp_lift', success=ep.success)
    assert a == describe_episode(ep.feature_dict(), task='grasp_lift')  # success recomputed
    assert 'block lift: max 7.0 cm' in a and 'both fingers in contact 12 steps' in a
    assert 'commanded closed 15 of 30 steps' in a


def test_description_errors_name_the_problem():
    with pytest.raises(ValueError, match='needs the task'):
        describe_episode(np.zeros((3, FEATURE_DIM), np.float32), None)
    with pytest.raises(ValueError, match='expected 43|expected'):
        describe_episode(np.zeros((3, 5), np.float32), 'touch')
    with pytest.raises(ValueError, match='unknown task'):
        describe_episode(np.zeros((3, FEATURE_DIM), np.float32), 'juggle')


def test_prompts_carry_task_vocabulary_and_format():
    sys_msg, user = prompts.propose_messages('push')
    assert sys_msg['role'] == 'system' and user['role'] == 'user'
    text = user['content']
    assert 'Push the block' in text
    assert all(f'- {n} ' in text for n in FEATURE_NAMES)
    assert 'PARAMETERS' in text and "'scale'" in text and "DON'T" in text
    assert text.index('## Plan') < text.index('## Reward')  # plan before code
    assert '$' not in text  # every placeholder filled
    rank = prompts.rank_messages('touch', ['a', 'b', 'c'])[1]['content']
    assert 'Episode 2:\nc' in rank and '0 to\n2' in rank.replace('0 to 2', '0 to\n2')
    fail = prompts.analyze_failure_messages(
        'touch', 'code', [{'name': 'w', 'value': 2.0, 'lower': 0.1, 'upper': 10.0,
                           'scale': 'log', 'meaning': 'weight'}], ['x'], 0.1, 0.85)[1]['content']
    assert '- w = 2, range [0.1, 10], log, weight' in fail and '0.85' in fail and '10%' in fail
    with pytest.raises(ValueError, match='at least 2'):
        prompts.rank_messages('touch', ['only one'])
