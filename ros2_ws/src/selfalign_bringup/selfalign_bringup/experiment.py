"""In-process self-alignment experiment: DrQ-v2 on a gym task with a fixed or self-aligned reward.

The fast, pure equivalent of the ROS graph (policy_node + reward_node + alignment_node +
llm_node) used for measurements (``benchmarks/paper_table.py``). It composes existing pieces only:

* the sim's gym env with state observations (``selfalign_bringup.sim.envs``);
* the reward template proposed by the LLM (``LLMClient.propose_reward``; the scripted teacher
  answers with the reference template that reproduces the paper's mistakes), held in a
  ``RewardStore`` (range checks, versions) and evaluated by ``RewardFunction`` bound to θ;
* ``selfalign_policy.trainer.Trainer`` (DrQ-v2), whose replay is re-scored through
  ``Trainer.set_reward_fn`` whenever θ changes;
* condition ``'selfalign'``: every ``reward_update_every_steps`` environment steps the decisions
  alignment_node makes (``selfalign_reward.outer_loop``): K diverse recent training episodes, LLM
  ranking, failure analysis when the reward already agrees with the LLM (Kendall τ ≥ threshold)
  but success stays low, ``alignment.metropolis_hastings`` from the (possibly proposed) θ, MAP θ
  into the store. Condition ``'fixed'``: the initial θ never changes (one LLM call, the proposal).

``alignment_update`` mirrors ``AlignmentNode._run_update`` step by step (that flow lives inside
the node, around service calls); the decisions themselves are imported from ``outer_loop``.

Everything is logged to a ``RunDir`` in the layout the ROS run writes (config.yaml,
transcript.jsonl, metrics.csv rows of kind episode | eval | alignment | reward_spec,
reward_params.yaml, plots/*.png), so the same plots come out. Pure: no rclpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
import math
import os
import time
from typing import Any

import numpy as np

from selfalign_core.episode import EpisodeRecord
from selfalign_core.tasks import get_task, TASKS
from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.outer_loop import OuterLoop, OuterLoopConfig, refit_theta
from selfalign_reward.sandbox import validate_template
from selfalign_reward.store import RewardStore
from selfalign_reward.template import parse_template

CONDITIONS = ('fixed', 'selfalign')
ENV_IDS = {'touch': 'SelfAlign/Touch-v0', 'grasp_lift': 'SelfAlign/GraspLift-v0',
           'push': 'SelfAlign/Push-v0'}


@dataclass(frozen=True)
class ExperimentConfig:
    """One run: task, seed, condition and the settings of learner, outer loop and teacher."""

    task: str = 'touch'
    """'touch' | 'grasp_lift' | 'push'."""
    seed: int = 0
    """Seed of the trainer (torch, numpy, env seed sequence), the teacher and MH."""
    condition: str = 'selfalign'
    """'fixed' (initial θ throughout) or 'selfalign' (outer loop updates θ)."""
    total_env_steps: int = 20_000
    """Training environment steps (evaluation steps not counted)."""
    initial_theta: dict[str, float] = field(default_factory=dict)
    """θ entries that replace the template's initial values (a miscalibration sweep: e.g.
    ``{'w_push': 20.0}``); each must lie inside its range."""
    template_file: str = ''
    """Reward template source to start from instead of the LLM's proposal ('' = ask the LLM),
    as reward_node's ``template_file``: a set-up whose initial reward is a different template
    (checked and trial-run in the sandbox like any template)."""
    # ---- outer loop (alignment_node parameters of the same names) ----
    reward_update_every_steps: int = 2_000
    """Environment steps between reward updates (docs/method.md "Outer loop": 10k; shorter
    for short runs)."""
    num_ranked: int = 8
    """K, episodes the LLM ranks per update."""
    mh_samples: int = 2_000
    """Metropolis–Hastings samples kept after burn-in."""
    mh_burn_in: int = 500
    """Metropolis–Hastings burn-in iterations (step-size adaptation)."""
    beta: float = 0.9
    """Boltzmann rationality of the ranking likelihood."""
    prior_width: float = 0.5
    """Prior std as a fraction of each parameter's transformed range."""
    agreement_threshold: float = 0.7
    """Kendall τ at/above which the reward agrees with the LLM (failure-analysis trigger)."""
    success_threshold: float = 0.2
    """Success rate at/below which an agreeing reward triggers failure analysis."""
    success_window: int = 20
    """Recent (evaluation) episodes the outer loop's success rate is computed over."""
    update_gate_p: float = OuterLoopConfig.update_gate_p
    """Sign-test level an ordinary re-fit must reach on the held-out pairs it orders
    differently (``OuterLoopConfig.update_gate_p``; 1: better agreement alone)."""
    gate_folds: int = OuterLoopConfig.gate_folds
    """1: one fixed held-out split; K >= 2: K-fold cross-validated gate
    (``OuterLoopConfig.gate_folds``)."""
    relative_to_start: bool = OuterLoopConfig.relative_to_start
    """Fit the rankings on returns relative to each episode's start
    (``OuterLoopConfig.relative_to_start``)."""
    # ---- learner ----
    hidden_dim: int = 256
    """DrQ-v2 actor/critic hidden width."""
    lr: float = 3e-4
    """Adam learning rate (docs/tasks.md: 1e-4 did not learn push within 60k steps)."""
    update_every_steps: int = 1
    """One gradient update every this many env steps (docs/tasks.md: with 1, the oracle push
    reached 90 % at 45k env steps; with 2 it had not by 60k)."""
    num_expl_steps: int = 2_000
    """Uniform random actions before the policy acts."""
    stddev_steps: int = 30_000
    """Env steps of the exploration-noise decay linear(1.0, 0.1, N)."""
    critic_target_tau: float = 0.01
    """Soft target-critic update rate (DrQ-v2's 0.01; docs/tasks.md: 0.005 on push)."""
    batch_size: int = 256
    """Transitions per gradient update."""
    eval_every_steps: int = 1_000
    """Evaluation cadence, env steps."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation."""
    stop_after_success: int = 2
    """Stop once this many consecutive evaluations reach 100 % success (0: never stop early)."""
    drop_window_steps: int = 2_000
    """An update's 'success after' is the first evaluation at least this many env steps later
    (``ExperimentResult.max_drop_after_update``)."""
    # ---- scripted teacher (selfalign_llm.config.LLMConfig fields of the same names) ----
    teacher_beta: float = 20.0
    """Boltzmann inverse temperature of the teacher over ground-truth progress."""
    teacher_mistake_rate: float = 0.1
    """Expected fraction of episode pairs the teacher ranks wrongly."""
    teacher_tie_margin: float = 0.05
    """Progress difference within which the teacher ties neighbours."""
    # ---- output ----
    run_root: str = ''
    """Write a RunDir under this folder ('' = no files)."""
    num_threads: int = 1
    """torch threads (1 suits a shared CPU)."""
    verbose: bool = False
    """Print one line per evaluation and per alignment update (flushed)."""
    snapshot_path: str = ''
    """Rewrite the partial result as JSON here after every evaluation ('' = never), so a run
    cut short still leaves its curve; the final result carries ``partial: false``."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f'ExperimentConfig.task = {self.task!r}: choose one of '
                             f'{sorted(TASKS)}')
        if self.condition not in CONDITIONS:
            raise ValueError(f'ExperimentConfig.condition = {self.condition!r}: choose one of '
                             f'{CONDITIONS}')
        if self.total_env_steps < 1 or self.eval_every_steps < 1 or self.eval_episodes < 1:
            raise ValueError('ExperimentConfig.total_env_steps, eval_every_steps and '
                             'eval_episodes must be >= 1')
        if self.stop_after_success < 0:
            raise ValueError('ExperimentConfig.stop_after_success must be >= 0 (0: never)')
        if self.template_file and not os.path.isfile(self.template_file):
            raise ValueError(f'ExperimentConfig.template_file = {self.template_file!r}: no such '
                             "file (a reward template source, or '' to ask the LLM)")

    def outer_loop_config(self) -> OuterLoopConfig:
        return OuterLoopConfig(
            reward_update_every_steps=self.reward_update_every_steps,
            num_ranked=self.num_ranked, success_window=self.success_window,
            agreement_threshold=self.agreement_threshold,
            success_threshold=self.success_threshold, update_gate_p=self.update_gate_p,
            gate_folds=self.gate_folds, relative_to_start=self.relative_to_start,
            buffer_size=max(200, self.num_ranked), candidate_window=max(64, self.num_ranked))


@dataclass
class EvalPoint:
    """One evaluation: success rate (deterministic policy), θ in force, LLM usage so far and the
    rank agreement (Kendall τ after) of the latest alignment update (NaN before any)."""

    env_step: int
    success_rate: float
    mean_return: float
    theta: dict[str, float]
    llm_calls: int
    llm_tokens: int
    rank_agreement: float
    wall_s: float


def moved_updates(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The updates (``AlignmentUpdate`` fields, as dicts) that changed θ: applied — not
    skipped or kept — with a non-zero move. Results from before 2026-12-08 logged a failure
    analysis restating θ's values as applied with move 0; later ones log it 'kept'."""
    return [u for u in updates if not u['status'].startswith(('skipped', 'kept'))
            and u.get('theta_move', 1.0) > 0]


def max_drop_after(updates: list[dict[str, Any]]) -> float:
    """Largest fall of eval success from just before an update that moved θ to the evaluation
    ``drop_window_steps`` after it (0 when none fell; NaN without a measured pair; a value
    read back from JSON may be None for NaN)."""
    drops = [u['success_before'] - u['success_after'] for u in moved_updates(updates)
             if not any(v is None or math.isnan(v)
                        for v in (u['success_before'], u['success_after']))]
    return max([0.0, *drops]) if drops else math.nan


@dataclass
class AlignmentUpdate:
    """One outer-loop update (the fields of AlignmentReport that matter here)."""

    env_step: int
    status: str
    success_rate: float
    num_episodes: int
    theta_before: dict[str, float]
    theta_after: dict[str, float]
    kendall_tau_before: float = math.nan
    kendall_tau_after: float = math.nan
    acceptance_rate: float = math.nan
    failure_analysis: bool = False
    analysis: str = ''
    mh_s: float = 0.0
    heldout_before: float = math.nan
    """Agreement (τ-a) of θ before with the held-out pairs of all kept rankings."""
    heldout_after: float = math.nan
    """The same for the fitted θ (applied only when higher)."""
    num_heldout_pairs: int = 0
    num_rankings: int = 0
    decision: str = ''
    """``outer_loop.Refit.decision``: applied or kept, with the held-out pairs that decided."""
    theta_move: float = 0.0
    """RMS move of the fitted θ in MH space as a fraction of each range (outer_loop.Refit)."""
    success_before: float = math.nan
    """Eval success of the last evaluation at or before this update."""
    success_after: float = math.nan
    """Eval success of the first evaluation at least ``drop_window_steps`` after it."""


@dataclass
class ExperimentResult:
    """Everything a run measured; ``to_dict`` is JSON-safe (for worker processes)."""

    task: str
    seed: int
    condition: str
    initial_theta: dict[str, float]
    final_theta: dict[str, float]
    evals: list[EvalPoint] = field(default_factory=list)
    updates: list[AlignmentUpdate] = field(default_factory=list)
    llm_usage: dict[str, Any] = field(default_factory=dict)
    env_steps: int = 0
    updates_done: int = 0
    wall_s: float = 0.0
    run_dir: str = ''
    model: str = ''

    @property
    def steps_to_success(self) -> int | None:
        """Env step of the first evaluation at 100 % success (None if never)."""
        return next((e.env_step for e in self.evals if e.success_rate >= 1.0), None)

    @property
    def final_success_rate(self) -> float:
        return self.evals[-1].success_rate if self.evals else math.nan

    @property
    def best_success_rate(self) -> float:
        return max((e.success_rate for e in self.evals), default=math.nan)

    @property
    def max_drop_after_update(self) -> float:
        """Largest fall of eval success from just before an applied update to
        ``drop_window_steps`` after it (0 when none fell; NaN without a measured pair)."""
        return max_drop_after([vars(u) for u in self.updates])

    partial: bool = False
    """True while the run is still going (snapshots)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d['steps_to_success'] = self.steps_to_success
        d['final_success_rate'] = self.final_success_rate
        d['best_success_rate'] = self.best_success_rate
        d['max_drop_after_update'] = self.max_drop_after_update
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentResult:
        keep = {k: v for k, v in d.items()
                if k not in ('steps_to_success', 'final_success_rate', 'best_success_rate',
                             'max_drop_after_update')}
        keep['evals'] = [EvalPoint(**e) for e in d.get('evals', [])]
        keep['updates'] = [AlignmentUpdate(**u) for u in d.get('updates', [])]
        return cls(**keep)


def _write_json(path: str, data: dict[str, Any]) -> None:
    """Atomic JSON write (tmp file + rename)."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as fh:
        json.dump(data, fh, indent=1, default=float)
    os.replace(tmp, path)


def _tokens(usage: dict[str, Any]) -> int:
    return int(usage.get('prompt_tokens', 0)) + int(usage.get('completion_tokens', 0))


def alignment_update(client: Any, task: str, store: RewardStore, fn: RewardFunction,
                      loop: OuterLoop, cfg: ExperimentConfig, rng: np.random.Generator,
                      env_step: int) -> AlignmentUpdate:
    """One outer-loop update (``outer_loop.refit_theta``, as alignment_node); sets θ in ``store``.

    LLM failures (``LLMError``) and reward runtime errors skip the update (status 'skipped: ...'),
    leaving θ unchanged, like the node.
    """
    state = store.state
    theta = dict(state.theta)
    upd = AlignmentUpdate(env_step=int(env_step), status='updated',
                          success_rate=loop.success_rate(), num_episodes=0,
                          theta_before=dict(theta), theta_after=dict(theta))
    description = get_task(task).description
    try:
        episodes = loop.select(fn, theta)
        upd.num_episodes = len(episodes)
        ranks = np.asarray(client.rank_detailed(task, episodes, description).ranks,
                           dtype=np.int64)

        def analyze(tau_before: float):
            analysis, proposal = client.analyze_failure(
                task, state.template, theta, episodes, upd.success_rate, tau_before,
                description)
            return analysis, list(proposal), [float(v) for v in proposal.values()]

        refit = refit_theta(fn, state.template, theta, episodes, ranks, upd.success_rate, loop,
                            analyze, mh_samples=cfg.mh_samples, mh_burn_in=cfg.mh_burn_in,
                            beta=cfg.beta, prior_width=cfg.prior_width, rng=rng,
                            env_step=env_step)
        upd.mh_s = refit.mh_s
        upd.failure_analysis = refit.failure_analysis
        upd.analysis = refit.analysis
        upd.kendall_tau_before = float(refit.tau_before)
        upd.acceptance_rate = float(refit.result.acceptance_rate)
        upd.heldout_before, upd.heldout_after = refit.heldout_before, refit.heldout_after
        upd.num_heldout_pairs, upd.num_rankings = refit.num_heldout_pairs, refit.num_rankings
        upd.theta_move = refit.theta_move
        upd.decision = refit.decision
        if not refit.applied:
            upd.status = f'kept: {refit.decision}'
            upd.kendall_tau_after = float(refit.tau_before)
            return upd
        if refit.proposal_used:
            upd.status = 'failure_analysis'
        new_theta = refit.theta
        ok, why, _version = store.set_params(list(new_theta), list(new_theta.values()))
        if not ok:
            upd.status = f'skipped: {why}'
            return upd
        upd.theta_after = dict(store.state.theta)
        upd.kendall_tau_after = float(refit.tau_after)
    except Exception as exc:  # noqa: BLE001 - like the node: an update never ends the run
        upd.status = f'skipped: {type(exc).__name__}: {exc}'
        upd.theta_after = dict(theta)
    return upd


def run_experiment(task: str, seed: int, condition: str, total_env_steps: int,
                   **overrides: Any) -> ExperimentResult:
    """Train on ``task`` for ``total_env_steps`` under ``condition``; see ``ExperimentConfig``.

    Keyword overrides are ``ExperimentConfig`` fields. Returns the measured ``ExperimentResult``.
    """
    cfg = ExperimentConfig(task=task, seed=seed, condition=condition,
                           total_env_steps=total_env_steps, **overrides)
    return run_config(cfg)


def run_config(cfg: ExperimentConfig) -> ExperimentResult:
    """``run_experiment`` with a ready config."""
    import gymnasium as gym
    import torch

    from selfalign_bringup.rundir import plot_run, RunDir
    import selfalign_bringup.sim  # noqa: F401  (registers the SelfAlign/* envs)
    from selfalign_llm.config import LLMConfig, make_client
    from selfalign_policy.config import DrQV2Config
    from selfalign_policy.trainer import Callbacks, Trainer

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    t_start = time.perf_counter()
    run = RunDir.create(cfg.run_root, f'{cfg.task}-{cfg.condition}-s{cfg.seed}') \
        if cfg.run_root else None
    llm = LLMConfig(backend='scripted', seed=cfg.seed, teacher_beta=cfg.teacher_beta,
                    teacher_mistake_rate=cfg.teacher_mistake_rate,
                    teacher_tie_margin=cfg.teacher_tie_margin,
                    transcript_path=str(run.transcript_path) if run else '')
    client = make_client(llm)
    drq = DrQV2Config.from_dict({
        'agent': {'hidden_dim': cfg.hidden_dim, 'lr': cfg.lr,
                  'update_every_steps': cfg.update_every_steps,
                  'num_expl_steps': cfg.num_expl_steps, 'stddev_steps': cfg.stddev_steps,
                  'critic_target_tau': cfg.critic_target_tau,
                  'batch_size': cfg.batch_size, 'num_threads': cfg.num_threads},
        'replay': {'capacity': max(cfg.total_env_steps + 2_000, 10_000)},
        'trainer': {'seed': cfg.seed, 'eval_every_steps': cfg.eval_every_steps,
                    'eval_episodes': cfg.eval_episodes, 'progress': False,
                    'metrics_every_updates': 1000}})
    if run is not None:
        run.write_config({'experiment': asdict(cfg), 'drqv2': drq.to_dict(),
                          'llm': asdict(llm)})

    # reward_node's part: the LLM proposes the template (already sandbox-validated by the
    # client), the store holds θ and checks every change against the ranges.
    if cfg.template_file:  # a set-up that starts from a given template (reward_node's too)
        template = parse_template(open(cfg.template_file, encoding='utf-8').read())
        validate_template(template)  # TemplateError says what is wrong with the file
        source = f'file:{cfg.template_file}'
    else:
        template, _plan = client.propose_reward(cfg.task, get_task(cfg.task).description)
        source = client.model
    store = RewardStore(validate=parse_template)
    ok, why = store.adopt(template.code, source)
    if not ok:
        raise RuntimeError(f'the proposed reward template does not parse: {why}')
    fn = RewardFunction(template)
    if cfg.initial_theta:
        ok, why, _ = store.set_params(list(cfg.initial_theta),
                                      [float(v) for v in cfg.initial_theta.values()])
        if not ok:
            raise ValueError(f'ExperimentConfig.initial_theta: {why}')

    spec_version = [None]

    def log_spec(env_step: int) -> None:
        """A 'reward_spec' row per new θ version, as monitor_node writes; the table once."""
        state = store.state
        if run is None or state.version == spec_version[0]:
            return
        if spec_version[0] is None:
            run.write_params([{'name': p.name, 'lower': p.lower, 'upper': p.upper,
                               'scale': p.scale, 'initial': state.theta[p.name]}
                              for p in state.template.params])
        spec_version[0] = state.version
        run.log('reward_spec', env_step, version=state.version,
                **{f'theta.{k}': f'{v:.6g}' for k, v in state.theta.items()})

    log_spec(0)

    def bound(theta: dict[str, float]):
        th = dict(theta)
        return lambda packed: fn.total(packed, th).astype(np.float32)

    loop = OuterLoop(cfg.outer_loop_config())
    if cfg.initial_theta:  # the (miscalibrated) initial θ is the belief the prior is centred on
        loop.prior_center = dict(store.state.theta)
    rng = np.random.default_rng(cfg.seed)
    result = ExperimentResult(task=cfg.task, seed=cfg.seed, condition=cfg.condition,
                              initial_theta=dict(store.state.theta),
                              final_theta=dict(store.state.theta),
                              run_dir=str(run.path) if run else '', model=client.model)
    streak = [0]
    trainer: Trainer | None = None

    def on_episode_end(ep: Any) -> None:
        rec = EpisodeRecord(**ep.record_fields())
        loop.add(rec)
        if run is not None:
            run.log('eval' if ep.evaluation else 'episode', ep.env_step,
                    episode=ep.episode_index, success=int(ep.success),
                    success_rate=int(ep.success) if ep.evaluation else '',
                    ret=f'{ep.extra["return"]:.4f}', reward_version=ep.reward_version)
        if cfg.condition != 'selfalign' or ep.evaluation or not loop.update_due():
            return
        loop.mark_updated()
        upd = alignment_update(client, cfg.task, store, fn, loop, cfg, rng, loop.env_step)
        if result.evals:
            upd.success_before = result.evals[-1].success_rate
        result.updates.append(upd)
        if upd.theta_after != upd.theta_before:
            trainer.set_reward_fn(bound(upd.theta_after), version=store.state.version)
        log_spec(upd.env_step)
        if cfg.verbose:
            print(f'[{cfg.task} {cfg.condition} s{cfg.seed}] update @ {upd.env_step}: '
                  f'{upd.status}, tau {upd.kendall_tau_before:.2f} -> '
                  f'{upd.kendall_tau_after:.2f}, success {upd.success_rate:.2f}, theta '
                  + ', '.join(f'{k}={v:.3g}' for k, v in upd.theta_after.items()), flush=True)
        if run is not None:
            run.log('alignment', upd.env_step, status=upd.status,
                    kendall_tau_before=f'{upd.kendall_tau_before:.4f}',
                    kendall_tau_after=f'{upd.kendall_tau_after:.4f}',
                    acceptance_rate=f'{upd.acceptance_rate:.3f}',
                    heldout_before=f'{upd.heldout_before:.4f}',
                    heldout_after=f'{upd.heldout_after:.4f}',
                    theta_move=f'{upd.theta_move:.4f}',
                    failure_analysis=int(upd.failure_analysis),
                    **{f'theta.{k}': f'{v:.6g}' for k, v in upd.theta_after.items()})

    def on_eval(res: dict[str, float]) -> None:
        usage = client.usage()
        tau = next((u.kendall_tau_after for u in reversed(result.updates)
                    if not u.status.startswith('skipped')), math.nan)
        point = EvalPoint(env_step=int(res['env_step']), success_rate=res['success_rate'],
                          mean_return=res['mean_return'], theta=dict(store.state.theta),
                          llm_calls=int(usage['calls']), llm_tokens=_tokens(usage),
                          rank_agreement=float(tau), wall_s=time.perf_counter() - t_start)
        result.evals.append(point)
        for u in result.updates:
            due = point.env_step >= u.env_step + cfg.drop_window_steps
            if math.isnan(u.success_after) and due:
                u.success_after = point.success_rate
        streak[0] = streak[0] + 1 if res['success_rate'] >= 1.0 else 0
        if cfg.verbose:
            print(f'[{cfg.task} {cfg.condition} s{cfg.seed}] eval @ {point.env_step}: success '
                  f'{point.success_rate:.2f}, return {point.mean_return:.1f}, '
                  f'{point.wall_s:.0f} s', flush=True)
        if cfg.snapshot_path:
            result.partial = True
            result.env_steps = point.env_step
            result.final_theta = dict(store.state.theta)
            result.llm_usage = usage
            result.wall_s = point.wall_s
            _write_json(cfg.snapshot_path, result.to_dict())
        if run is not None:
            run.log('eval_round', point.env_step, success_rate=f'{point.success_rate:.3f}',
                    mean_return=f'{point.mean_return:.4f}', llm_calls=point.llm_calls,
                    llm_tokens=point.llm_tokens)

    env = gym.make(ENV_IDS[cfg.task])
    try:
        trainer = Trainer(env, drq, bound(store.state.theta), task=cfg.task,
                          callbacks=Callbacks(on_episode_end=on_episode_end, on_eval=on_eval))
        while trainer.env_step < cfg.total_env_steps:
            trainer.train(min(trainer.env_step + cfg.eval_every_steps, cfg.total_env_steps))
            if cfg.stop_after_success and streak[0] >= cfg.stop_after_success:
                break
        result.env_steps = trainer.env_step
        result.updates_done = trainer.update_count
    finally:
        env.close()
    result.partial = False
    result.final_theta = dict(store.state.theta)
    result.llm_usage = client.usage()
    result.wall_s = time.perf_counter() - t_start
    if run is not None:
        plot_run(run)
    return result
