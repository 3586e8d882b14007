"""Run directory: metrics survive new columns and re-opening; plots are written and readable."""

import pytest

from selfalign_bringup.rundir import (
    agreement_figure,
    plot_run,
    Plotter,
    round_start_step,
    RunDir,
    success_figure,
    theta_figure,
)


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


def test_the_plotter_draws_in_a_worker_process_and_replaces_one_that_died(tmp_path):
    """The monitor's redraws run in a process of their own (matplotlib's CPU off the run's
    GIL): the files appear, drawn by another pid; a worker killed from outside fails that
    redraw and the next one starts a new worker."""
    from concurrent.futures.process import BrokenProcessPool
    import os
    import signal

    run = RunDir.create(tmp_path, 'touch')
    for i in range(30):
        run.log('episode', 100 * (i + 1), success=int(i > 15))
    run.log('eval', 1000, success_rate=0.5)
    plotter = Plotter(run)
    try:
        written = plotter.plot()
        assert run.plots_dir / 'success.png' in written
        assert all(p.stat().st_size > 5000 for p in written)
        worker = plotter._pool.submit(os.getpid).result(timeout=60)
        assert worker != os.getpid()
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            plotter.plot()
        (run.plots_dir / 'success.png').unlink()
        assert (run.plots_dir / 'success.png') in plotter.plot()
        assert plotter._pool.submit(os.getpid).result(timeout=60) not in (worker, os.getpid())
    finally:
        plotter.close()


def test_a_copied_run_directory_writes_to_itself_not_to_the_original(tmp_path):
    import shutil

    from selfalign_bringup import wiring
    original = RunDir(tmp_path / 'a' / 'run')
    config = wiring.resolve(wiring.Args(task='touch', run_dir=str(original.path)))
    original.write_config(config)
    assert config['llm_node']['transcript_path'].startswith(str(original.path))
    shutil.copytree(original.path, tmp_path / 'b')
    copied = RunDir.open_existing(tmp_path / 'b').read_config()
    assert copied['/**']['run_dir'] == str(tmp_path / 'b')
    assert copied['llm_node']['transcript_path'] == str(tmp_path / 'b' / 'transcript.jsonl')
    assert str(original.path) not in str(copied)
    assert original.read_config() == config  # the original reads as it was written


def test_each_session_records_to_its_own_file(tmp_path):
    run = RunDir(tmp_path / 'run')
    first = run.new_recording_path()
    assert first == run.recording_path
    first.write_bytes(b'part one')
    second = run.new_recording_path()
    assert second.name == 'recording-1.mcap'
    second.write_bytes(b'part two')
    assert run.new_recording_path().name == 'recording-2.mcap'
    assert first.read_bytes() == b'part one'


def test_rewind_drops_only_episode_rows_after_the_resume_step(tmp_path):
    run = RunDir(tmp_path / 'run')
    for step in (100, 200, 300):
        run.log('episode', step, success=0)
    run.log('eval', 200, success_rate=1)
    run.log('eval', 300, success_rate=1)
    run.log('alignment', 300, status='updated')  # it happened: θ moved; it stays
    assert run.rewind(200) == 2
    assert [(r['kind'], r['env_step']) for r in run.read_metrics()] == [
        ('episode', '100'), ('episode', '200'), ('eval', '200'), ('alignment', '300')]
    run.log('episode', 300, success=1)  # the replayed step, once
    assert [r['env_step'] for r in run.read_metrics() if r['kind'] == 'episode'] == [
        '100', '200', '300']


@pytest.mark.parametrize('workers', [1, 4])
def test_round_start_step_recovers_the_checkpoint_step_with_workers(workers, tmp_path):
    """A resumed run's first episode says where its round began (the monitor's rewind)."""
    import gymnasium as gym

    import selfalign_bringup.sim  # noqa: F401
    from selfalign_policy.config import DrQV2Config
    from selfalign_policy.trainer import Callbacks, Trainer

    envs = [gym.make('SelfAlign/Touch-v0') for _ in range(workers)]
    ends: list[tuple[int, int, str]] = []
    try:
        cfg = DrQV2Config.from_dict({'agent': {'hidden_dim': 16, 'feature_dim': 8,
                                               'num_expl_steps': 10**6},
                                     'trainer': {'eval_every_steps': 0, 'progress': False}})
        tr = Trainer(envs if workers > 1 else envs[0], cfg, lambda x: x[:, 0], task='touch',
                     worker_names=[f'arm_{i}' for i in range(workers)] if workers > 1 else None,
                     callbacks=Callbacks(on_episode_end=lambda e: ends.append(
                         (e.env_step, len(e.features), e.worker))))
        tr.run_round()
        checkpoint_step = tr.env_step
        ends.clear()
        tr.run_round()
    finally:
        for e in envs:
            e.close()
    run = RunDir(tmp_path / 'run')
    for step, _, worker in ends:
        run.log('episode', step, worker=worker)
    first_step, steps, _ = ends[0]
    assert round_start_step(first_step, steps, max(1, len(run.worker_names()))) == checkpoint_step


PARAMS = [{'name': 'w_push', 'lower': 0.1, 'upper': 100.0, 'scale': 'log', 'initial': 2.0},
          {'name': 'margin', 'lower': 0.0, 'upper': 0.2, 'scale': 'linear', 'initial': 0.05}]


def _aligned_run(tmp_path, params=True):
    """A run as monitor_node writes it: spec at step 0, updates (one kept, one failure
    analysis), evaluation rounds of 10 and 8 episodes, training episodes."""
    run = RunDir(tmp_path / 'run')
    if params:
        run.write_params(PARAMS)
        run.log('reward_spec', 0, version=0, **{'theta.w_push': 2.0, 'theta.margin': 0.05})
    for step in range(100, 3100, 100):
        run.log('episode', step, success=int(step > 1500))
    for step, n in ((1000, 10), (2000, 8)):
        for k in range(n):
            run.log('eval', step, success=int(k < n // 2), success_rate=int(k < n // 2))
    for step, status, fa, w, m, tau in ((1000, 'updated', 0, 8.0, 0.08, (0.1, 0.6)),
                                        (2000, 'kept: no better', 0, 8.0, 0.08, (0.3, 0.2)),
                                        (3000, 'failure_analysis', 1, 20.0, 0.12, (-0.2, 0.5))):
        run.log('alignment', step, status=status, failure_analysis=fa,
                kendall_tau_before=tau[0], kendall_tau_after=tau[1], heldout_before=0.1,
                heldout_after=0.3, **{'theta.w_push': w, 'theta.margin': m})
    return run


def test_params_table_keeps_the_first_entry_and_appends_new_names(tmp_path):
    run = RunDir(tmp_path / 'run')
    assert run.read_params() == {}
    assert run.write_params(PARAMS)
    assert not run.write_params([{**PARAMS[0], 'initial': 50.0}])  # the run's first stays
    assert run.write_params([{'name': 'w_lift', 'lower': 1, 'upper': 5}])
    params = run.read_params()
    assert list(params) == ['w_push', 'margin', 'w_lift']
    assert params['w_push'] == {'lower': 0.1, 'upper': 100.0, 'scale': 'log', 'initial': 2.0}
    assert params['w_lift'] == {'lower': 1.0, 'upper': 5.0, 'scale': 'linear', 'initial': None}


def test_theta_has_one_panel_per_parameter_from_the_initial_value_within_its_range(tmp_path):
    run = _aligned_run(tmp_path)
    fig = theta_figure(run.read_metrics(), run.read_params())
    assert len(fig.axes) == 2
    w_push, margin = fig.axes
    assert w_push.get_yscale() == 'log' and margin.get_yscale() == 'linear'
    assert w_push.get_title().startswith('w_push = 20') and '0.12' in margin.get_title()
    for ax, spec, initial, final in ((w_push, PARAMS[0], 2.0, 20.0),
                                     (margin, PARAMS[1], 0.05, 0.12)):
        step = next(line for line in ax.lines if line.get_drawstyle() == 'steps-post')
        xs, ys = list(step.get_xdata()), list(step.get_ydata())
        assert (xs[0], ys[0]) == (0, initial)  # the step-0 value, so the first move shows
        assert ys[-1] == final and xs[-1] == 3000
        lo, hi = ax.get_ylim()  # the whole allowed range, and not much more
        assert lo < spec['lower'] and hi > spec['upper']
        if ax is w_push:
            assert lo > spec['lower'] / 2 and hi < spec['upper'] * 2
        else:
            assert lo > -0.05 and hi < 0.25
        assert len(ax.patches) == 1  # the shaded range
    kept = [line for line in w_push.lines if list(line.get_xdata()) == [2000]
            and line.get_marker() == 'o']
    assert kept and kept[0].get_markerfacecolor() == 'white'  # kept update drawn hollow
    assert any(line.get_marker() == 'D' for line in w_push.lines)  # failure analysis
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert 'update kept (not applied)' in labels and 'allowed range' in labels


def test_theta_of_an_old_run_without_the_params_table_autoscales_each_panel(tmp_path):
    run = _aligned_run(tmp_path, params=False)
    fig = theta_figure(run.read_metrics(), run.read_params())
    assert len(fig.axes) == 2
    assert all(ax.get_yscale() == 'linear' and not ax.patches for ax in fig.axes)
    margin = next(ax for ax in fig.axes if ax.get_title().startswith('margin'))
    assert margin.get_ylim()[1] < 0.2  # fitted to the data, not to a range


def test_success_marks_each_evaluation_with_its_episode_count(tmp_path):
    fig = success_figure(_aligned_run(tmp_path).read_metrics(), window=5, title='run')
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ['n=10', 'n=8']
    evaluation = next(line for line in ax.lines if line.get_label().startswith('evaluation'))
    assert list(evaluation.get_xdata()) == [1000, 2000]
    assert list(evaluation.get_ydata()) == [0.5, 0.5]
    assert '8-10 episodes' in evaluation.get_label()


def test_agreement_pairs_before_and_after_per_update(tmp_path):
    rows = _aligned_run(tmp_path).read_metrics()
    fig = agreement_figure(rows)
    assert [ax.get_title() for ax in fig.axes] == ['Kendall τ with the LLM ranking',
                                                   'held-out agreement']
    tau = fig.axes[0]
    arrows = [t for t in tau.texts if t.arrow_patch is not None]
    assert [(a.xy, a.xyann) for a in arrows] == [((1000, 0.6), (1000, 0.1)),
                                                 ((2000, 0.2), (2000, 0.3)),
                                                 ((3000, 0.5), (3000, -0.2))]
    for r in rows:
        r.pop('heldout_before', None), r.pop('heldout_after', None)
    assert len(agreement_figure(rows).axes) == 1  # no held-out columns: τ only


def test_plot_run_reads_the_params_table(tmp_path):
    run = _aligned_run(tmp_path)
    assert sorted(p.name for p in plot_run(run)) == ['agreement.png', 'success.png',
                                                     'theta.png']
