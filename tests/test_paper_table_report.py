"""benchmarks/paper_table.py's summary compares the conditions on the seeds both have run."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'benchmarks'))
import paper_table  # noqa: E402


def _row(condition: str, seed: int, steps: int | None, final: float,
         tau: float = 0.01) -> dict:
    return {'task': 'touch', 'sweep': 'paper', 'condition': condition, 'seed': seed,
            'critic_target_tau': tau,
            'steps_to_90': steps, 'best_success': final, 'final_success': final,
            'budget_steps': 30000, 'initial_theta': {'force_threshold': 1.0},
            'final_theta': {'force_threshold': 1.0}, 'updates': 0, 'updates_tried': 0,
            'llm_calls': 1, 'llm_tokens': 10, 'max_drop_after_update': None, 'commit': 'x'}


def test_summary_means_use_the_seeds_both_conditions_have():
    rows = [_row('fixed', 0, 7000, 1.0), _row('fixed', 1, 14000, 1.0),
            _row('fixed', 2, 2000, 0.5), _row('selfalign', 0, 7000, 1.0),
            _row('selfalign', 1, 14000, 1.0)]
    line = next(ln for ln in paper_table.report(rows) if ln.startswith('| touch | paper | 0, 1 |'))
    cols = [c.strip() for c in line.strip('|').split('|')]
    # seed 2 (fixed only) would pull the fixed mean to 7.7k and its final success to 83 %
    assert cols[3:7] == ['10.5k', '10.5k', '100 %', '100 %'], cols
    alone = paper_table.report([_row('fixed', 0, None, 0.0), _row('fixed', 1, 5000, 1.0)])
    assert any(ln.startswith('| touch | paper | 0, 1 | 5.0k (1/2 seeds) | n/a |') for ln in alone)


def test_a_cell_run_with_another_learner_is_its_own_row_and_its_own_table(tmp_path,
                                                                        monkeypatch):
    """The same cell with critic_target_tau 0.005 and 0.01: both rows kept (before, the
    second replaced the first: the row key had no learner setting), each learner summarised
    on its own; a re-run of one replaces only its own row."""
    monkeypatch.setattr(paper_table, 'RESULTS_JSON', tmp_path / 'paper_table.json')
    paper_table.save(_row('fixed', 0, 7000, 1.0, tau=0.01))
    paper_table.save(_row('fixed', 0, 3000, 1.0, tau=0.005))
    paper_table.save(_row('fixed', 0, 2000, 1.0, tau=0.005))  # re-run: replaces its own
    rows = paper_table.load()
    assert sorted((r['critic_target_tau'], r['steps_to_90']) for r in rows) == [
        (0.005, 2000), (0.01, 7000)]
    lines = paper_table.report(rows)
    heads = [ln for ln in lines if ln.startswith('## ')]
    assert heads == ['## Learner with critic_target_tau 0.01',
                     '## Learner with critic_target_tau 0.005']
    second = lines.index(heads[1])
    assert any(ln.startswith('| touch | paper | 0 | 7.0k |') for ln in lines[:second])
    assert any(ln.startswith('| touch | paper | 0 | 2.0k |') for ln in lines[second:])


def test_the_table_measures_the_learner_the_product_trains_each_task_with(tmp_path,
                                                                         monkeypatch):
    """The table's default rate per task is what the task's config/<task>.yaml ships, not
    one global value: a config that sets another rate for one task moves that task only."""
    import shutil

    from selfalign_bringup import wiring

    for task in ('push', 'touch', 'grasp_lift'):
        policy = wiring.resolve(wiring.Args(task=task))['policy_node']
        assert paper_table.default_critic_tau(task) == policy.get('critic_target_tau', 0.01)
    shutil.copytree(wiring.config_dir(), tmp_path, dirs_exist_ok=True)
    push = tmp_path / wiring.TASK_CONFIGS['push']
    push.write_text(push.read_text().replace('critic_target_tau: 0.01',
                                             'critic_target_tau: 0.005'))
    monkeypatch.setattr(wiring, 'config_dir', lambda: tmp_path)
    assert paper_table.default_critic_tau('push') == 0.005
    assert paper_table.default_critic_tau('touch') == 0.01


def test_sweep_set_ups_are_within_the_template_ranges_and_task_specific():
    import pytest

    from selfalign_reward.template import load_reference_template, parse_template

    spec = {s.name: s for s in load_reference_template('touch').params}
    for sweep in paper_table.SETUPS:
        # a set-up that starts from another template: its own table and initial values
        file = paper_table.SETUP_TEMPLATES.get(sweep, {}).get('touch')
        own = {s.name: s for s in parse_template(file.read_text()).params} if file else spec
        theta = {**{n: s.init for n, s in own.items()}, **paper_table.sweep_theta('touch', sweep)}
        assert theta['force_threshold'] == 40.0  # above every touch force measured (17-27 N)
        for name, value in theta.items():
            assert own[name].lower <= value <= own[name].upper, (sweep, name)
    assert paper_table.sweep_theta('touch', 'standoff') == {}  # its template's own values
    assert paper_table.sweep_theta('touch', 'above-flat')['reach_sharpness'] == \
        spec['reach_sharpness'].lower
    assert paper_table.sweep_theta('touch', 'x10') == {'force_threshold': 10.0}
    with pytest.raises(ValueError, match='above-flat'):
        paper_table.sweep_theta('push', 'above-flat')


def test_each_self_aligned_row_says_which_update_gate_it_ran_under():
    """Rows measured before the gate settings were recorded ran under one held-out split; the
    report says so, so rows measured under different gates are not mistaken for one method."""
    old = _row('selfalign', 0, 7000, 1.0)  # no settings recorded
    new = {**_row('selfalign', 1, 5000, 1.0),
           'settings': {'gate_folds': 4, 'update_gate_p': 0.05}}
    sign = {**_row('selfalign', 2, 5000, 1.0), 'settings': {'update_gate_p': 0.05}}
    assert [paper_table.gate_label(r) for r in (old, new, sign, _row('fixed', 0, 1, 1.0))] == \
        ['split', 'CV4 p0.05', 'split p0.05', '']
    lines = paper_table.report([old, new])
    header = next(ln for ln in lines if ln.startswith('| task | sweep | condition |'))
    col = [c.strip() for c in header.strip('|').split('|')].index('update gate')
    rows = [ln for ln in lines if ln.startswith('| touch | paper | selfalign |')]
    assert [[c.strip() for c in ln.strip('|').split('|')][col] for ln in rows] == \
        ['split', 'CV4 p0.05']


def _merge_many(path: str, worker: int, n: int) -> None:
    import learning_check

    for i in range(n):
        learning_check.merge_row(Path(path), {'task': 'push', 'seed': 100 * worker + i,
                                              'change': 'x', 'steps_to_90': None},
                                 ('task', 'seed', 'change'))


def test_two_runs_merging_results_at_once_lose_no_row(tmp_path):
    """paper_table.py --jobs 2 and two trials.py at once write the same results file: each
    merge reads, replaces its row and writes; without the file lock one run's row vanished."""
    import json
    import multiprocessing as mp

    path = tmp_path / 'push_trials.json'
    procs = [mp.get_context('fork').Process(target=_merge_many, args=(str(path), w, 60))
             for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seeds = sorted(r['seed'] for r in json.loads(path.read_text()))
    assert seeds == sorted([*range(60), *range(100, 160)])


def test_updates_that_left_theta_where_it_was_are_not_counted_nor_their_drops(tmp_path,
                                                                             monkeypatch):
    """Push rows counted failure analyses restating θ's values (move 0) as applied updates
    and measured 'drops after' them (push paper seed 1: 10 applied, 5 moved θ; its 20 % drop
    followed a no-move). The count and the drop are taken from the updates that moved θ."""
    def upd(status, move, before, after):
        return {'status': status, 'theta_move': move, 'success_before': before,
                'success_after': after}
    row = {**_row('selfalign', 0, 7000, 1.0), 'update_log': [
        upd('updated', 0.3, 0.5, 0.4), upd('failure_analysis', 0.0, 0.6, 0.3),
        upd('kept: no better', 0.2, 0.9, 0.0), upd('skipped: LLMError', 0.0, None, None),
        upd('failure_analysis', 0.1, None, None)]}
    counted = paper_table.with_update_counts(row)
    assert counted['updates'] == 2
    assert counted['max_drop_after_update'] == pytest.approx(0.1)
    monkeypatch.setattr(paper_table, 'RESULTS_JSON', tmp_path / 'paper_table.json')
    paper_table.save(row)  # rows merged from older runs are recounted as they land
    (saved,) = paper_table.load()
    assert saved['updates'] == 2
    none_moved = paper_table.with_update_counts({**row, 'update_log': row['update_log'][1:2]})
    assert none_moved['updates'] == 0 and none_moved['max_drop_after_update'] is None


def test_a_trial_can_start_from_a_given_theta(tmp_path, monkeypatch):
    """``--initial-theta``: the values are set over the sweep's initial θ (a controlled test of
    a θ a self-aligned run ended on); bad input names the fix."""
    monkeypatch.setattr(paper_table, 'RUNS', tmp_path)
    tiny = dict(num_expl_steps=100, batch_size=32, hidden_dim=32, eval_every_steps=200,
                eval_episodes=1, stop_after_success=0, verbose=False, critic_target_tau=0.01)
    row = paper_table._job(('touch', 0, 'fixed', 'x10', 200,
                            {**tiny, 'initial_theta': {'w_touch': 4.0}}))
    assert row['initial_theta']['w_touch'] == 4.0
    assert row['initial_theta']['force_threshold'] == 10.0  # the sweep's value stays
    assert row['final_theta'] == row['initial_theta'] and 'initial_theta' not in row['settings']
    assert paper_table._theta_arg('{"w_push": 20}') == {'w_push': 20.0}
    for bad in ('w_push=20', '[20]', '{"w_push": "high"}'):
        with pytest.raises(argparse.ArgumentTypeError, match='w_push'):
            paper_table._theta_arg(bad)
