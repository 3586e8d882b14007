"""Strict reply parsing: proposals, rankings, failure analyses; errors name the fix."""

import pytest

from selfalign_llm.parse import (
    parse_failure_analysis,
    parse_proposal,
    parse_ranking,
    ParseError,
    ranks_from_groups,
)

CODE = """PARAMETERS = [
    {'name': 'w', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log', 'meaning': 'weight'},
]

def reward(f, p):
    r = -p['w'] * f['ee_block_dist']
    return r, {'r': r}
"""
PLAN = "## Plan\n1. Approach: DO get close to the block. DON'T push it away.\n## Reward\n"


def test_proposal_plan_and_code_are_split():
    prop = parse_proposal(f'{PLAN}```python\n{CODE}```\n')
    assert prop.code.strip() == CODE.strip()
    assert prop.plan.startswith('1. Approach') and '## Reward' not in prop.plan


def test_proposal_takes_the_block_that_defines_reward():
    reply = f'{PLAN}```json\n{{"x": 1}}\n```\nthen\n```python\n{CODE}```'
    assert 'def reward' in parse_proposal(reply).code


@pytest.mark.parametrize('reply, words', [
    ('Here is my reward: reward = distance', 'no code block'),
    (f'{PLAN}```python\nx = 1\n```', 'def reward'),
    (f'{PLAN}```python\n{CODE[:80]}', 'cut off'),
    (f'```python\n{CODE}```', 'plan is missing'),
])
def test_proposal_errors_say_what_to_send(reply, words):
    with pytest.raises(ParseError, match=words):
        parse_proposal(reply)


def test_proposal_without_plan_allowed_for_repairs():
    assert parse_proposal(f'Fixed the name.\n```python\n{CODE}```', require_plan=False).code


def test_ranking_groups_ties_and_ranks():
    groups = parse_ranking('```json\n{"ranking": [[2], [0, 3], [1]]}\n```', 4)
    assert groups == [[2], [0, 3], [1]]
    assert ranks_from_groups(groups, 4) == [1, 2, 0, 1]
    # bare JSON and bare integers as singleton groups
    assert parse_ranking('Sure! {"ranking": [1, [0, 2]]}', 3) == [[1], [0, 2]]


@pytest.mark.parametrize('reply, words', [
    ('{"ranking": [[0], [1], [1]]}', r'\[1\] appear more than once.*\[2\] are missing'),
    ('{"ranking": [[0, 1], [2], [7]]}', r'\[7\] do not exist'),
    ('{"ranking": [[0, 1, 2]], }', 'not valid JSON'),
    ('{"order": [0, 1, 2]}', 'no "ranking" key'),
    ('{"ranking": [["a"], [1, 2]]}', 'integer episode indices'),
    ('{"ranking": [[0], [1', 'cut off'),
    ('I think episode 2 is best.', 'no JSON object'),
    ('[[0], [1], [2]]', 'no JSON object|must be a JSON object'),
    ('{"ranking": ' + '[' * 100_000 + ']' * 100_000 + '}', 'nested too deeply'),
    ('{"ranking": [[0], [1], [' + '7' * 5000 + ']]}', 'unreadable value'),
])
def test_ranking_errors(reply, words):
    with pytest.raises(ParseError, match=words):
        parse_ranking(reply, 3)


RANGES = {'w_push': (0.1, 50.0), 'force_threshold': (0.01, 5.0)}


def test_failure_analysis_parsed_inside_ranges():
    text, prop = parse_failure_analysis(
        '```json\n{"analysis": "push too weak", "parameters": {"w_push": 21.05}}\n```', RANGES)
    assert text == 'push too weak' and prop == {'w_push': 21.05}


@pytest.mark.parametrize('reply, words', [
    ('{"analysis": "x", "parameters": {"w_push": 80}}', r'outside its range \[0.1, 50\]'),
    ('{"analysis": "x", "parameters": {"w_pull": 1}}', "unknown parameter 'w_pull'"),
    ('{"analysis": "", "parameters": {"w_push": 1}}', 'non-empty string'),
    ('{"analysis": "x", "parameters": {}}', 'non-empty object'),
    ('{"analysis": "x", "parameters": {"w_push": "big"}}', 'finite number'),
])
def test_failure_analysis_errors(reply, words):
    with pytest.raises(ParseError, match=words):
        parse_failure_analysis(reply, RANGES)
