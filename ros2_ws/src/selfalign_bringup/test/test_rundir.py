"""Run directory: metrics survive new columns and re-opening; plots are written."""

import pytest

from selfalign_bringup.rundir import plot_run, RunDir


def test_metrics_extend_header_and_survive_reopen(tmp_path):
    run = RunDir.create(tmp_path, 'push')
    run.write_config({'task': 'push', 'seed': 3})
    run.log('episode', 100, success=0, ret=1.5)
    run.log('alignment', 200, **{'theta.w_push': 2.0, 'kendall_tau_before': 0.1,
                                 'kendall_tau_after': 0.8})
    run.log('episode', 300, success=1, ret=4.0)
    rows = run.read_metrics()
    assert [r['kind'] for r in rows] == ['episode', 'alignment', 'episode']
    assert rows[0]['theta.w_push'] == '' and rows[1]['theta.w_push'] == '2.0'
    again = RunDir.open_existing(run.path)
    again.log('eval', 400, success_rate=0.5)
    assert again.last_env_step() == 400 and again.read_config()['seed'] == 3
    assert len(again.read_metrics()) == 4


def test_open_existing_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match='not a selfalign run directory'):
        RunDir.open_existing(tmp_path)


def test_plots_written(tmp_path):
    run = RunDir.create(tmp_path, 'touch')
    for i in range(30):
        run.log('episode', 100 * (i + 1), success=int(i > 15))
    for i in range(3):
        run.log('eval', 1000 * (i + 1), success_rate=i / 2)
        run.log('alignment', 1000 * (i + 1), **{'theta.force_threshold': 1.0 / (i + 1),
                                                'kendall_tau_before': 0.2,
                                                'kendall_tau_after': 0.6})
    names = sorted(p.name for p in plot_run(run))
    assert names == ['agreement.png', 'success.png', 'theta.png']
    assert all((run.plots_dir / n).stat().st_size > 5000 for n in names)
