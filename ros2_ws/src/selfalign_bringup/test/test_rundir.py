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
