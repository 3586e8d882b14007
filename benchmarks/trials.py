"""One learning-check trial: the oracle cell of ``learning_check.py`` with a named change.

A trial is a ``learning_check.run_cell`` with overrides of the simulator (``--sim``, SimConfig
fields) and of the learner (``--agent``, AgentConfig fields), labelled ``--change``. Its record
(the learning-check record plus ``change`` and ``stopped_at``) is merged into
``benchmarks/results/<task>_trials.json``, replacing the same (task, seed, change); the table in
``docs/tasks.md`` ("What was tried on push") is written from that file.

    python benchmarks/trials.py --task push --seed 2 --change 'n-step 5' --agent '{"nstep": 5}'
    python benchmarks/trials.py --task push --seed 2 --change 'final std 0.2' \\
        --agent '{"stddev_final": 0.2}' --stop-after 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learning_check as lc  # noqa: E402


def trials_path(task: str) -> Path:
    return lc.RESULTS / f'{task}_trials.json'


def save(record: dict[str, Any]) -> None:
    """Merge one trial into ``<task>_trials.json`` (replacing the same task/seed/change)."""
    lc.merge_row(trials_path(record['task']), record, ('task', 'seed', 'change'))


def _json_arg(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        example = '{"nstep": 5}' if name == '--agent' else '{"goal_max_angle_deg": 90}'
        raise SystemExit(f"{name}: not JSON ({exc}); e.g. {name} '{example}'") from None
    if not isinstance(value, dict):
        raise SystemExit(f'{name}: expected a JSON object of config fields, got {text!r}')
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--task', choices=lc.TASKS, default='push')
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--change', required=True, help='label of the trial in the results file')
    ap.add_argument('--agent', default='{}', help='AgentConfig overrides (JSON object)')
    ap.add_argument('--sim', default='{}', help='SimConfig overrides (JSON object)')
    ap.add_argument('--steps', type=int, default=0, help='budget (default: the issue-11 one)')
    ap.add_argument('--stop-after', type=int, default=0,
                    help='stop after this many consecutive evaluations at >= 90 %% (0: never)')
    lc.add_learner_args(ap)
    a = ap.parse_args()
    settings = {**lc.learner_settings(a), 'agent': _json_arg('--agent', a.agent),
                'sim': _json_arg('--sim', a.sim)}
    budget = a.steps or lc.BUDGETS[a.task]
    record = lc.run_cell(a.task, a.seed, budget, settings, a.stop_after)
    record['change'] = a.change
    record['stopped_at'] = record['env_steps'] if record['stopped_early'] else None
    save(record)
    print(f'{a.task} seed {a.seed} [{a.change}]: steps to 90 % '
          f'{record["steps_to_90"] if record["steps_to_90"] is not None else "never"} '
          f'(budget {budget}); written to {trials_path(a.task)}')


if __name__ == '__main__':
    main()
