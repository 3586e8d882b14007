"""Prompt texts of the LLM roles, read from package data (prompts/*.txt) and filled in.

Placeholders use ``string.Template`` syntax (``$name``) so that code and JSON braces in the
texts need no escaping. Every prompt gets the task words, the feature vocabulary
(``features.describe_vocabulary()``) and the reward template format, so all backends see the
same facts. Pure: no rclpy.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template

from selfalign_core.features import describe_vocabulary
from selfalign_core.tasks import get_task

#: Control period of the robot, s (10 Hz, docs/method.md "Task set-up"); in the system prompt.
CONTROL_PERIOD_S = 0.1

#: Prompt names -> files under selfalign_llm/prompts/.
PROMPT_NAMES = ('system', 'template_format', 'propose', 'repair', 'rank', 'analyze_failure',
                'reask')


@cache
def load(name: str) -> str:
    """Raw text of prompts/<name>.txt; ValueError names the valid prompts."""
    if name not in PROMPT_NAMES:
        raise ValueError(f'unknown prompt {name!r}; choose one of {PROMPT_NAMES}')
    return (resources.files('selfalign_llm') / 'prompts' / f'{name}.txt').read_text('utf-8')


def render(name: str, **fields: object) -> str:
    """Fill prompt ``name``; a KeyError names a placeholder that was not given."""
    try:
        return Template(load(name)).substitute({k: str(v) for k, v in fields.items()})
    except KeyError as exc:
        raise KeyError(f'prompt {name!r} needs the field {exc.args[0]!r}') from None


def _task_fields(task: str, task_description: str = '') -> dict[str, object]:
    t = get_task(task)
    return {'task_name': t.name, 'task_description': task_description or t.description,
            'episode_steps': t.episode_steps, 'control_period_s': CONTROL_PERIOD_S,
            'vocabulary': describe_vocabulary(), 'template_format': load('template_format')}


def system_message(task: str) -> dict[str, str]:
    """The system message shared by all roles."""
    return {'role': 'system', 'content': render('system', **_task_fields(task))}


def propose_messages(task: str, task_description: str = '') -> list[dict[str, str]]:
    """Chat messages asking for a step plan and a reward template."""
    return [system_message(task),
            {'role': 'user', 'content': render('propose', **_task_fields(task, task_description))}]


def repair_messages(task: str, code: str, error: str,
                    task_description: str = '') -> list[dict[str, str]]:
    """Chat messages asking to fix ``code`` that failed validation with ``error``."""
    fields = _task_fields(task, task_description)
    return [system_message(task),
            {'role': 'user', 'content': render('repair', code=code.strip('\n'), error=error,
                                               **fields)}]


def format_descriptions(descriptions: list[str]) -> str:
    """Numbered episode descriptions, as the rank and failure prompts show them."""
    return '\n\n'.join(f'Episode {i}:\n{d}' for i, d in enumerate(descriptions))


def rank_messages(task: str, descriptions: list[str],
                  task_description: str = '') -> list[dict[str, str]]:
    """Chat messages asking to rank the described episodes, best first, ties allowed."""
    k = len(descriptions)
    if k < 2:
        raise ValueError(f'ranking needs at least 2 episodes, got {k}')
    fields = _task_fields(task, task_description)
    return [system_message(task),
            {'role': 'user', 'content': render(
                'rank', num_episodes=k, last_index=k - 1,
                descriptions=format_descriptions(descriptions), **fields)}]


def format_parameters(params: list[dict[str, object]]) -> str:
    """One line per parameter: name = value, [lower, upper], scale, meaning."""
    return '\n'.join(
        f"- {q['name']} = {float(q['value']):.6g}, range [{float(q['lower']):.6g}, "
        f"{float(q['upper']):.6g}], {q['scale']}, {q['meaning']}" for q in params)


def analyze_failure_messages(task: str, code: str, params: list[dict[str, object]],
                             descriptions: list[str], success_rate: float, agreement: float,
                             task_description: str = '') -> list[dict[str, str]]:
    """Chat messages asking why the task fails and which parameter values to change.

    ``params``: dicts with name, value, lower, upper, scale, meaning (current theta).
    """
    fields = _task_fields(task, task_description)
    return [system_message(task),
            {'role': 'user', 'content': render(
                'analyze_failure', code=code.strip('\n'), parameters=format_parameters(params),
                descriptions=format_descriptions(descriptions),
                success_rate=f'{success_rate:.0%}', agreement=f'{agreement:.2f}', **fields)}]


def reask_message(error: str) -> dict[str, str]:
    """The user message that re-asks after an unusable reply, naming what was wrong."""
    return {'role': 'user', 'content': render('reask', error=error)}
