"""Strict parsing of LLM replies: reward proposal (plan + code block), ranking, failure analysis.

Every failure raises ``ParseError`` whose message says what is wrong and what to send instead;
the client sends that message back to the LLM (the re-ask loop). Validation of the *code* itself
(AST allow-list, sandboxed trial run) is ``selfalign_reward.template``'s job; here only the
reply's shape is checked (its errors lead to a re-ask; template errors to the repair prompt).
Pure: no rclpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import json
import math
import re
from typing import Any

_FENCE = re.compile(r'```([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```', re.DOTALL)


class ParseError(ValueError):
    """A reply that does not have the requested form; ``str()`` is meant for the LLM."""


@dataclass(frozen=True)
class Proposal:
    """A parsed reward proposal: the step plan (text) and the template source code."""

    plan: str
    code: str


def code_blocks(reply: str) -> list[tuple[str, str]]:
    """All fenced blocks of ``reply`` as (language tag, body)."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(reply)]


def _unclosed_fence(reply: str) -> bool:
    return reply.count('```') % 2 == 1


def extract_code(reply: str) -> tuple[str, int]:
    """The reward code block of ``reply`` and its start offset in the reply.

    Picks the (last) ```python block that defines ``reward``; ParseError when there is none,
    when the fence is unclosed (truncated reply), or when a block defines no ``def reward``.
    """
    blocks = [(m.start(), m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(reply)]
    candidates = [(s, body) for s, lang, body in blocks
                  if lang in ('python', 'py', '') and 'def reward' in body]
    if candidates:
        start, body = candidates[-1]
        return body.strip('\n') + '\n', start
    if _unclosed_fence(reply):
        raise ParseError('the reply ends inside a code block (it was cut off): send the complete '
                         'template, closing the block with ```.')
    if blocks:
        raise ParseError('no ```python code block defines `def reward(f, p)`: put PARAMETERS and '
                         'def reward(f, p) together in one ```python block.')
    raise ParseError('no code block found: put the reward template in one ```python ... ``` '
                     'block.')


def parse_proposal(reply: str, require_plan: bool = True) -> Proposal:
    """Reply of the propose/repair roles -> plan text (before the code) + code.

    The plan is the text before the code block (a leading '## Plan' heading and a trailing
    '## Reward' heading are dropped). ParseError if the plan is required and missing, if the
    code block is missing. The code itself is checked by ``selfalign_reward.template``
    (``parse_template``/``validate_template``), whose errors go to the repair loop.
    """
    code, start = extract_code(reply)
    plan = reply[:start]
    plan = re.sub(r'^\s*#+\s*plan\s*:?\s*$', '', plan, count=1, flags=re.I | re.M)
    plan = re.sub(r'^\s*#+\s*reward\s*:?\s*$', '', plan, flags=re.I | re.M).strip()
    if require_plan and len(plan) < 20:
        raise ParseError('the step plan is missing: before the code block write "## Plan" with '
                         "the task's steps and for each a DO and a DON'T, then \"## Reward\" "
                         'and the code block.')
    return Proposal(plan=plan, code=code)


def _json_object(reply: str, what: str) -> dict[str, Any]:
    """The JSON object of a reply: a ```json block, else the outermost {...} span."""
    blocks = [body for lang, body in code_blocks(reply) if lang in ('json', '')]
    text = blocks[-1] if blocks else None
    if text is None:
        start, end = reply.find('{'), reply.rfind('}')
        if start < 0 or end <= start:
            if _unclosed_fence(reply) or start >= 0:
                raise ParseError(f'the {what} JSON is incomplete (the reply was cut off): send '
                                 'the whole object.')
            raise ParseError(f'no JSON object found: answer with the {what} as one JSON object '
                             'in a ```json block.')
        text = reply[start:end + 1]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f'the {what} is not valid JSON ({exc.msg} at line {exc.lineno} column '
                         f'{exc.colno}); send strict JSON (double quotes, no comments, no '
                         'trailing commas).') from None
    except RecursionError:
        raise ParseError(f'the {what} JSON is nested too deeply: send a flat object.') from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise ParseError(f'the {what} JSON holds an unreadable value ({exc}); use small '
                         'integers and plain numbers.') from None
    if not isinstance(obj, dict):
        raise ParseError(f'the {what} must be a JSON object {{...}}, got {type(obj).__name__}.')
    return obj


def parse_ranking(reply: str, num_episodes: int) -> list[list[int]]:
    """Ranking reply -> best-first groups of episode indices (ties share a group).

    Accepts ``{"ranking": [[2], [0, 3], [1]]}``; a bare integer counts as a group of one.
    ParseError unless the groups form a permutation of 0..num_episodes-1.
    """
    obj = _json_object(reply, 'ranking')
    if 'ranking' not in obj:
        raise ParseError(f'the JSON has no "ranking" key (keys: {sorted(obj)}); send '
                         '{"ranking": [[best], [next], ...]}.')
    ranking = obj['ranking']
    if not isinstance(ranking, list) or not ranking:
        raise ParseError('"ranking" must be a non-empty list of groups of episode indices.')
    groups: list[list[int]] = []
    for g in ranking:
        members = g if isinstance(g, list) else [g]
        if not members:
            raise ParseError('"ranking" contains an empty group; drop it.')
        for m in members:
            if isinstance(m, bool) or not isinstance(m, int):
                raise ParseError(f'"ranking" must hold integer episode indices, got {m!r}.')
        groups.append([int(m) for m in members])
    flat = [m for g in groups for m in g]
    last = num_episodes - 1
    bad = sorted({m for m in flat if not 0 <= m <= last})
    dup = sorted({m for m in flat if flat.count(m) > 1})
    missing = sorted(set(range(num_episodes)) - set(flat))
    problems = []
    if bad:
        problems.append(f'indices {bad} do not exist (valid: 0 to {last})')
    if dup:
        problems.append(f'indices {dup} appear more than once')
    if missing:
        problems.append(f'indices {missing} are missing')
    if problems:
        raise ParseError('the ranking is not a permutation of the episodes: '
                         + '; '.join(problems) + f'. List every index 0 to {last} exactly once.')
    return groups


def ranks_from_groups(groups: Sequence[Sequence[int]], num_episodes: int) -> list[int]:
    """Best-first groups -> ranks[i] (0 best; tied episodes share a rank)."""
    ranks = [-1] * num_episodes
    for r, g in enumerate(groups):
        for i in g:
            ranks[i] = r
    if min(ranks, default=0) < 0:
        raise ValueError(f'groups {groups} do not cover 0..{num_episodes - 1}')
    return ranks


def parse_failure_analysis(reply: str, params: Mapping[str, tuple[float, float]]
                           ) -> tuple[str, dict[str, float]]:
    """Failure-analysis reply -> (analysis text, {parameter: proposed value}).

    ``params`` maps each parameter name to its (lower, upper) range. ParseError if the analysis
    is empty, no parameter is proposed, a name is unknown or a value is outside its range.
    """
    obj = _json_object(reply, 'failure analysis')
    analysis = obj.get('analysis')
    if not isinstance(analysis, str) or not analysis.strip():
        raise ParseError('"analysis" must be a non-empty string saying what blocks success.')
    proposal = obj.get('parameters')
    if not isinstance(proposal, dict) or not proposal:
        raise ParseError('"parameters" must be a non-empty object {"name": new value} with the '
                         'parameters to change.')
    out: dict[str, float] = {}
    for name, value in proposal.items():
        if name not in params:
            raise ParseError(f'unknown parameter {name!r}; the parameters are {sorted(params)}.')
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ParseError(f'parameter {name!r}: value must be a finite number, got {value!r}.')
        lo, hi = params[name]
        if not lo <= value <= hi:
            raise ParseError(f'parameter {name!r}: {value:g} is outside its range [{lo:g}, '
                             f'{hi:g}]; propose a value inside it.')
        out[name] = float(value)
    return analysis.strip(), out
