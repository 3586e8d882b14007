"""In-process experiment loop: self-alignment changes θ and re-scores, the fixed reward does not.

Real components throughout: PyBullet gym env, DrQ-v2 trainer (torch), the scripted-teacher LLM
client, Metropolis–Hastings, a run directory on disk.
"""

import json
import math

import numpy as np
import pytest

from selfalign_bringup.experiment import (
    alignment_update,
    ExperimentConfig,
    ExperimentResult,
    run_experiment,
)
from selfalign_llm.backends.scripted import template_source
from selfalign_llm.config import LLMConfig, make_client
from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.outer_loop import OuterLoop
from selfalign_reward.store import RewardStore
from selfalign_reward.synthetic import synthetic_episode
from selfalign_reward.template import parse_template, TemplateError

# A tiny run: 300 env steps, alignment every 100 steps over K = 2 episodes, few MH samples.
TINY = dict(reward_update_every_steps=100, num_ranked=2, mh_samples=100, mh_burn_in=50,
            num_expl_steps=100, batch_size=32, hidden_dim=32, eval_every_steps=300,
            eval_episodes=1, stop_after_success=0)


def test_selfalign_run_changes_theta_and_rescores(tmp_path):
    res = run_experiment('touch', 0, 'selfalign', 300, run_root=str(tmp_path), **TINY)
    assert res.env_steps == 300
    done = [u for u in res.updates if not u.status.startswith('skipped')]
    # updates are due at 200 and 300 steps (K = 2 training episodes needed first)
    assert [u.env_step for u in res.updates] == [200, 300], res.updates
    assert done, [u.status for u in res.updates]
    assert res.final_theta != res.initial_theta
    assert res.initial_theta['force_threshold'] == 1.0  # the paper's initial mistake
    assert res.final_theta == done[-1].theta_after
    assert all(math.isfinite(u.kendall_tau_after) for u in done)
    # propose + one rank per update (+ failure analyses), every call on the transcript
    usage = res.llm_usage
    assert usage['calls'] >= 1 + len(res.updates) and usage['failures'] == 0
    assert usage['by_role']['rank'] == len(res.updates)
    assert res.evals and res.evals[-1].llm_calls == usage['calls']
    assert res.evals[-1].llm_tokens > 0 and math.isfinite(res.evals[-1].rank_agreement)
    assert res.evals[-1].theta == res.final_theta
    # run dir in the ROS run's layout; episodes after an update carry the new reward version
    run = tmp_path / res.run_dir.split('/')[-1]
    lines = (run / 'transcript.jsonl').read_text().splitlines()
    assert len(lines) == usage['calls']
    metrics = (run / 'metrics.csv').read_text().splitlines()
    assert any(',alignment,' in m for m in metrics)
    assert {p.name for p in (run / 'plots').iterdir()} >= {'success.png', 'theta.png',
                                                           'agreement.png'}
    # JSON round trip (benchmarks/paper_table.py moves results between processes this way)
    back = ExperimentResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.final_theta == res.final_theta and back.steps_to_success == res.steps_to_success


def test_fixed_run_keeps_theta_and_asks_llm_once():
    res = run_experiment('touch', 0, 'fixed', 300, **TINY)
    assert res.updates == []
    assert res.final_theta == res.initial_theta
    assert all(e.theta == res.initial_theta for e in res.evals)
    assert res.llm_usage['calls'] == 1 and res.llm_usage['by_role'] == {'propose': 1}
    assert all(math.isnan(e.rank_agreement) for e in res.evals)


def test_a_run_can_start_from_a_template_file_instead_of_the_llms(tmp_path):
    """A set-up whose initial reward is another template (paper_table's 'standoff'): the run
    uses it (its parameters, its initial values) and never asks the LLM for a proposal."""
    source = template_source('touch').replace("'init': 1.0, 'lower': 0.01", "'init': 40.0, "
                                              "'lower': 0.01")
    path = tmp_path / 'touch_40n.py'
    path.write_text(source)
    res = run_experiment('touch', 0, 'fixed', 300, template_file=str(path), **TINY)
    assert res.initial_theta['force_threshold'] == 40.0 and res.final_theta == res.initial_theta
    assert res.llm_usage['calls'] == 0
    broken = tmp_path / 'broken.py'
    broken.write_text(source.replace('def reward(f, p):', 'def reward(f, p):\n    import os'))
    with pytest.raises(TemplateError):
        run_experiment('touch', 0, 'fixed', 300, template_file=str(broken), **TINY)
    with pytest.raises(ValueError, match='template_file'):
        ExperimentConfig(template_file=str(tmp_path / 'missing.py'))
    # the benchmark set-ups' templates are valid templates
    from pathlib import Path

    from selfalign_reward.sandbox import validate_template
    shipped = sorted((Path(__file__).resolve().parents[4] / 'benchmarks' / 'templates')
                     .glob('*.py'))
    assert shipped
    for file in shipped:
        validate_template(parse_template(file.read_text()))


def test_failure_analysis_when_reward_agrees_but_task_fails():
    """Noiseless teacher ranks by approach, as the reward does (τ = 1), no episode touches:
    the update asks for a failure analysis and MH starts from the lowered force threshold."""
    cfg = ExperimentConfig(task='touch', num_ranked=5, mh_samples=300, mh_burn_in=100)
    client = make_client(LLMConfig(teacher_beta=0.0, teacher_mistake_rate=0.0))
    template = parse_template(template_source('touch'))
    store = RewardStore(validate=parse_template)
    assert store.adopt(template.code, 'test')[0]
    loop = OuterLoop(cfg.outer_loop_config())
    for i, gap in enumerate([0.3, 0.2, 0.1, 0.05, 0.02]):
        loop.add(synthetic_episode('touch', closest_m=gap, episode_index=i, env_step=100 * i))
    upd = alignment_update(client, 'touch', store, RewardFunction(template), loop, cfg,
                           np.random.default_rng(0), loop.env_step)
    assert upd.failure_analysis and upd.status == 'failure_analysis', upd
    assert upd.kendall_tau_before >= 0.7 and upd.success_rate == 0.0
    assert 'threshold' in upd.analysis
    assert upd.theta_after['force_threshold'] == 0.125  # 1 N / 8, held by MH
    assert upd.theta_after['w_touch'] == 4.0  # the contact bonus doubled, held too
    assert 'failure analysis set w_touch, force_threshold' in upd.decision
    assert store.state.theta == upd.theta_after and store.state.version == 1
    assert client.usage()['by_role'] == {'analyze_failure': 1, 'rank': 1}


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match='condition'):
        ExperimentConfig(condition='oracle')
    with pytest.raises(ValueError, match='task'):
        ExperimentConfig(task='stack')
