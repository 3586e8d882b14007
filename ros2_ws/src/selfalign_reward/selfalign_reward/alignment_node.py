"""alignment_node: the outer loop — LLM rankings -> Metropolis–Hastings -> new reward parameters θ.

Collects finished episodes; every ``reward_update_every_steps`` environment steps (the episodes'
``env_step`` is the clock) it picks ``num_ranked`` diverse recent episodes, asks the LLM to rank
them (RankTrajectories), runs Metropolis–Hastings on θ (``selfalign_reward.alignment``), sets the
MAP θ on reward_node (SetRewardParams) and publishes an AlignmentReport. When the reward already
agrees with the LLM (Kendall τ ≥ ``agreement_threshold``) but success stays at or below
``success_threshold``, it first asks for a failure analysis (AnalyzeFailure) and starts MH from
the proposal when it lies inside the ranges. The update runs on a worker thread; LLM failures or
timeouts skip the update with a warning (status 'skipped: ...'). Decision logic lives in
``selfalign_reward.outer_loop``.

Parameters:
  task (str): task name (for the LLM requests).
  reward_update_every_steps (int): updates when the episodes' env_step crosses each multiple.
  num_ranked (int): K, episodes ranked per update.
  mh_samples (int), mh_burn_in (int): Metropolis–Hastings samples kept / burn-in iterations.
  beta (float): Boltzmann rationality of the ranking likelihood.
  prior_width (float): prior std as a fraction of each parameter's transformed range.
  agreement_threshold (float), success_threshold (float): failure-analysis trigger.
  success_window (int): recent episodes the success rate is computed over.
  buffer_size (int): recent episodes kept.
  llm_call_deadline_s (float): llm_node's budget for one call (shared, llm.yaml's ``/**``);
      each service call waits that plus ``reward_node.LLM_WAIT_MARGIN_S``.
  seed (int): seed of the MH random generator.
  heldout_fraction (float): share of each ranking's pairs held out; an update is applied only
      when it orders the held-out pairs of all kept rankings better (outer_loop.refit_theta).
  analysis_gate_p (float): a failure-analysis update is held back only when it orders the
      held-out pairs worse at this one-sided sign-test level.
  update_gate_p (float, 0.05): an ordinary re-fit must also order more of the held-out pairs
      it changes better than worse at this one-sided sign-test level (1: better agreement
      alone).
  gate_folds (int, 4): K >= 2: K-fold cross-validation over every pair (K extra MH runs per
      update; the θ applied is fit on all pairs); 1: one fixed held-out split.
  max_rankings (int): LLM rankings kept and fitted together (oldest dropped).
  relative_to_start (bool): fit the rankings on each episode's return relative to its start,
      Σ_t (r_t − r_0) (``OuterLoopConfig.relative_to_start``).
  run_dir (str): the schedule is kept in <run_dir>/alignment_state.json and the rankings in
      <run_dir>/alignment_preferences.npz ('' = nowhere).
  resume (bool): continue the schedule and rankings saved there (a resumed policy may replay
      steps).
Subscribes:
  /selfalign/episode (selfalign_interfaces/Episode).
  /selfalign/reward_spec (selfalign_interfaces/RewardSpec, transient local).
Publishes:
  /selfalign/alignment_report (selfalign_interfaces/AlignmentReport).
Clients:
  /selfalign/rank_trajectories, /selfalign/analyze_failure, /selfalign/set_reward_params.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import threading

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from selfalign_core import names as N
from selfalign_core.episode import EpisodeRecord
from selfalign_core.executors import run_node
from selfalign_core.qos import LATCHED
from selfalign_core.services import call_with_resend
from selfalign_core.tasks import get_task
from selfalign_interfaces.msg import AlignmentReport, Episode, RewardSpec
from selfalign_interfaces.srv import AnalyzeFailure, RankTrajectories, SetRewardParams
from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.msgs import episode_from_msg, episode_to_msg, spec_from_msg
from selfalign_reward.outer_loop import (
    ANALYSIS_UNAVAILABLE,
    OuterLoop,
    OuterLoopConfig,
    refit_theta,
)
from selfalign_reward.reward_node import LLM_CALL_DEADLINE_S, LLM_WAIT_MARGIN_S, llm_wait_s
from selfalign_reward.sandbox import validate_template
from selfalign_reward.template import RewardTemplate, TemplateError


def _int_param(node: Node, name: str, default: int, desc: str, lo: int, hi: int) -> int:
    return int(node.declare_parameter(name, default, ParameterDescriptor(
        description=desc, integer_range=[IntegerRange(from_value=lo, to_value=hi, step=1)])).value)


def _float_param(node: Node, name: str, default: float, desc: str, lo: float, hi: float) -> float:
    return float(node.declare_parameter(name, default, ParameterDescriptor(
        description=desc,
        floating_point_range=[FloatingPointRange(from_value=lo, to_value=hi)])).value)


class AlignmentNode(Node):
    """See the module docstring."""

    #: the clock only stamps logs and reports: it follows sim time at most 20 times
    #: a second (wall), not once per sim step (selfalign_core.polled.SharedSimClock)
    SIM_CLOCK_MIN_PERIOD_S = 0.05

    def __init__(self) -> None:
        super().__init__('alignment_node')
        self.task = self.declare_parameter('task', 'push', ParameterDescriptor(
            description="task name: 'touch' | 'grasp_lift' | 'push'", read_only=True)).value
        get_task(self.task)
        cfg = OuterLoopConfig(
            reward_update_every_steps=_int_param(
                self, 'reward_update_every_steps', 10_000,
                'environment steps between reward updates', 1, 10**9),
            num_ranked=_int_param(self, 'num_ranked', 8, 'episodes the LLM ranks per update',
                                  2, 64),
            buffer_size=_int_param(self, 'buffer_size', 200, 'recent episodes kept', 8, 10_000),
            success_window=_int_param(self, 'success_window', 20,
                                      'recent episodes for the success rate', 1, 1000),
            agreement_threshold=_float_param(
                self, 'agreement_threshold', 0.7,
                'Kendall tau at/above which the reward agrees with the LLM', -1.0, 1.0),
            success_threshold=_float_param(
                self, 'success_threshold', 0.2,
                'success rate at/below which an agreeing reward triggers failure analysis',
                0.0, 1.0),
            heldout_fraction=_float_param(
                self, 'heldout_fraction', 0.25,
                "share of each ranking's preference pairs held out of the fit", 0.01, 0.99),
            max_rankings=_int_param(self, 'max_rankings', 32,
                                    'LLM rankings kept and fitted together', 1, 10_000),
            analysis_gate_p=_float_param(
                self, 'analysis_gate_p', 0.05,
                'sign-test level at which a failure-analysis update that orders held-out '
                'pairs worse is held back', 0.0, 1.0),
            update_gate_p=_float_param(
                self, 'update_gate_p', OuterLoopConfig.update_gate_p,
                'sign-test level an ordinary re-fit must reach on the held-out pairs it orders '
                'differently (1: better agreement alone)', 0.0, 1.0),
            gate_folds=_int_param(
                self, 'gate_folds', OuterLoopConfig.gate_folds,
                'K >= 2: every pair predicted by a fit made without it (K-fold '
                'cross-validation); 1: one fixed held-out split', 1, 20),
            relative_to_start=bool(self.declare_parameter(
                'relative_to_start', OuterLoopConfig.relative_to_start, ParameterDescriptor(
                    description="fit the rankings on each episode's return relative to its "
                                'start, sum of (r_t - r_0)')).value))
        cfg = OuterLoopConfig(**{**cfg.__dict__,
                                 'candidate_window': max(cfg.candidate_window, cfg.num_ranked)})
        self.mh_samples = _int_param(self, 'mh_samples', 10_000, 'MH samples kept after burn-in',
                                     1, 10**7)
        self.mh_burn_in = _int_param(self, 'mh_burn_in', 2_000, 'MH burn-in iterations',
                                     0, 10**7)
        self.beta = _float_param(self, 'beta', 0.9, 'Boltzmann rationality of the rankings',
                                 0.01, 100.0)
        self.prior_width = _float_param(
            self, 'prior_width', 0.5,
            "prior std as a fraction of each parameter's transformed range", 0.01, 10.0)
        self.llm_timeout_s = llm_wait_s(_float_param(
            self, 'llm_call_deadline_s', LLM_CALL_DEADLINE_S,
            "llm_node's budget for one call, s (shared with llm_node); each call waits "
            f'{LLM_WAIT_MARGIN_S:g} s longer', 1.0, 86400.0))
        seed = _int_param(self, 'seed', 0, 'seed of the MH random generator', 0, 2**31 - 1)
        run_dir = self.declare_parameter('run_dir', '', ParameterDescriptor(
            description="run directory ('' = keep nothing on disk)", read_only=True)).value
        resume = self.declare_parameter('resume', False, ParameterDescriptor(
            description='continue the update schedule saved in run_dir', read_only=True)).value
        self._state_file = Path(run_dir) / 'alignment_state.json' if run_dir else None
        self._memory_file = Path(run_dir) / 'alignment_preferences.npz' if run_dir else None
        self.rng = np.random.default_rng(seed)
        self.loop = OuterLoop(cfg)
        if resume and self._state_file is not None and self._state_file.is_file():
            self.loop.load_state_dict(json.loads(self._state_file.read_text()))
            self.get_logger().info(f'resumed the update schedule: last update at env step '
                                   f'{self.loop.last_update_step}')
        if resume and self._memory_file is not None and self._memory_file.is_file():
            self.loop.memory.load(self._memory_file)
            self.get_logger().info(f'resumed {len(self.loop.memory)} LLM ranking(s)')
        self._lock = threading.Lock()
        self._spec: RewardSpec | None = None
        self._fn_cache: tuple[str, RewardFunction] | None = None
        self._worker: threading.Thread | None = None
        self._closing = threading.Event()
        self._report_index = 0

        subs = MutuallyExclusiveCallbackGroup()
        clients = ReentrantCallbackGroup()
        self.create_subscription(Episode, N.EPISODE, self._on_episode, 50,
                                 callback_group=subs)
        self.create_subscription(RewardSpec, N.REWARD_SPEC, self._on_spec, LATCHED,
                                 callback_group=subs)
        self._report_pub = self.create_publisher(AlignmentReport,
                                                 N.ALIGNMENT_REPORT, 10)
        self._rank = self.create_client(RankTrajectories, N.RANK_TRAJECTORIES,
                                        callback_group=clients)
        self._analyze = self.create_client(AnalyzeFailure, N.ANALYZE_FAILURE,
                                           callback_group=clients)
        self._set = self.create_client(SetRewardParams, N.SET_REWARD_PARAMS,
                                       callback_group=clients)
        self.get_logger().info(
            f'alignment_node: task={self.task} every={cfg.reward_update_every_steps} steps, '
            f'K={cfg.num_ranked}, MH {self.mh_samples}+{self.mh_burn_in} burn-in, '
            f'beta={self.beta}, seed={seed}')

    # ------------------------------------------------------------------ callbacks
    def _on_spec(self, msg: RewardSpec) -> None:
        with self._lock:
            self._spec = msg
            self._maybe_start_update()  # episodes may have arrived before the first spec

    def _on_episode(self, msg: Episode) -> None:
        try:
            ep = episode_from_msg(msg)
        except ValueError as exc:
            self.get_logger().warning(f'dropping episode {msg.episode_index}: {exc}',
                                      throttle_duration_sec=10.0)
            return
        with self._lock:
            self.loop.add(ep)
            self._maybe_start_update()

    def _maybe_start_update(self) -> None:
        """Start the update worker when one is due (call with ``_lock`` held)."""
        busy = self._worker is not None and self._worker.is_alive()
        if busy or self._spec is None or not self.loop.update_due():
            return
        self.loop.mark_updated()
        self._save_schedule()
        self._worker = threading.Thread(
            target=self._update, daemon=True,
            args=(self._spec, self.loop.candidates(), self.loop.success_rate(),
                  self.loop.env_step))
        self._worker.start()

    def _save_schedule(self) -> None:
        """Atomically keep the update schedule in the run directory (for --resume)."""
        if self._state_file is None:
            return
        tmp = self._state_file.with_suffix('.json.tmp')
        tmp.write_text(json.dumps(self.loop.state_dict()))
        os.replace(tmp, self._state_file)

    def _reward_fn(self, template: RewardTemplate) -> RewardFunction:
        """The compiled reward for ``template``, validated once per code hash (TemplateError)."""
        if self._fn_cache is None or self._fn_cache[0] != template.sha256:
            # The code arrived over the network: sandbox trial run before it runs here.
            validate_template(template)
            self._fn_cache = (template.sha256, RewardFunction(template))
        return self._fn_cache[1]

    # ------------------------------------------------------------------ the update (worker)
    def _call(self, client, request, what: str):
        """Call a service from the worker thread; (reply, '') or (None, why)."""
        if not client.wait_for_service(timeout_sec=min(self.llm_timeout_s, 10.0)):
            return None, f'{client.srv_name} not available'
        # LLM requests are re-sent (same request_id) if a reply is lost; llm_node calls the LLM
        # once per id. SetRewardParams has no id and is sent once.
        reply, why = call_with_resend(client, request, self.llm_timeout_s, stop=self._closing)
        if reply is None:
            return None, f'{what}: {why}'
        if hasattr(reply, 'success') and not reply.success:
            return None, f'{what} failed: {reply.message}'
        return reply, ''

    def _update(self, spec: RewardSpec, candidates: list[EpisodeRecord], success: float,
                env_step: int) -> None:
        report = AlignmentReport(env_step=int(env_step), num_episodes=0,
                                 success_rate=float(success), reward_version=spec.version,
                                 param_names=list(spec.param_names),
                                 theta_before=list(spec.param_values))
        try:
            self._run_update(spec, candidates, report)
        except Exception as exc:  # noqa: BLE001 - an update must never kill the node
            report.status = f'skipped: {type(exc).__name__}: {exc}'
        if report.status.startswith('skipped'):
            self.get_logger().warning(f'reward update at env step {env_step} {report.status}')
            report.theta_after = list(report.theta_before)
        self._report_index += 1
        report.update_index = self._report_index
        report.header.stamp = self.get_clock().now().to_msg()
        if not self._closing.is_set():
            self._report_pub.publish(report)

    def _run_update(self, spec: RewardSpec, candidates: list[EpisodeRecord],
                    report: AlignmentReport) -> None:
        template, theta, _, _ = spec_from_msg(spec)
        try:
            fn = self._reward_fn(template)
        except TemplateError as exc:
            report.status = f'skipped: reward spec failed validation: {exc}'
            return
        episodes = self.loop.select(fn, theta, candidates)
        report.num_episodes = len(episodes)
        description = get_task(self.task).description
        ep_msgs = [episode_to_msg(e) for e in episodes]
        ranked, why = self._call(self._rank, RankTrajectories.Request(
            task=self.task, task_description=description, episodes=ep_msgs), 'RankTrajectories')
        if ranked is None:
            report.status = f'skipped: {why}'
            return
        ranks = np.asarray(ranked.ranks, dtype=np.int64)
        if ranks.shape != (len(episodes),):
            report.status = (f'skipped: RankTrajectories returned {ranks.size} ranks for '
                             f'{len(episodes)} episodes')
            return
        report.status = 'updated'

        def analyze(tau_before: float):
            analysis, why = self._call(self._analyze, AnalyzeFailure.Request(
                task=self.task, task_description=description, spec=spec, episodes=ep_msgs,
                success_rate=report.success_rate, rank_agreement=tau_before), 'AnalyzeFailure')
            if analysis is None:
                self.get_logger().warning(f'failure analysis unavailable ({why}); MH starts '
                                          'from the current θ')
                return None
            return analysis.analysis, list(analysis.param_names), list(analysis.param_values)

        refit = refit_theta(fn, template, theta, episodes, ranks, report.success_rate,
                            self.loop, analyze, mh_samples=self.mh_samples,
                            mh_burn_in=self.mh_burn_in, beta=self.beta,
                            prior_width=self.prior_width, rng=self.rng,
                            env_step=report.env_step)
        if self._memory_file is not None:
            self.loop.memory.save(self._memory_file)
        result, tau_before = refit.result, refit.tau_before
        report.heldout_agreement_before = float(refit.heldout_before)
        report.heldout_agreement_after = float(refit.heldout_after)
        report.num_heldout_pairs = int(refit.num_heldout_pairs)
        report.num_rankings = int(refit.num_rankings)
        report.theta_move = float(refit.theta_move)
        report.failure_analysis = refit.failure_analysis
        report.analysis = refit.analysis
        if refit.proposal_used:
            report.status = 'failure_analysis'
        elif refit.failure_analysis and refit.proposal_rejected != ANALYSIS_UNAVAILABLE:
            self.get_logger().warning(
                f'failure-analysis proposal rejected: {refit.proposal_rejected}')
        report.theta_std = [float(s) for s in result.theta_std]
        report.kendall_tau_before = float(tau_before)
        report.acceptance_rate = float(result.acceptance_rate)
        report.num_samples = int(self.mh_samples)
        if not refit.applied:
            report.status = f'kept: {refit.decision}'
            report.kendall_tau_after = float(tau_before)
            report.theta_after = list(report.theta_before)
            self.get_logger().info(f'update at env step {report.env_step}: {refit.decision}')
            return
        new_theta = refit.theta
        report.theta_after = [new_theta[n] for n in spec.param_names]
        report.kendall_tau_after = float(refit.tau_after)
        reply, why = self._call(self._set, SetRewardParams.Request(
            param_names=list(spec.param_names), param_values=report.theta_after,
            reason=f'self-alignment update {self._report_index + 1}: tau {tau_before:.2f} -> '
                   f'{refit.tau_after:.2f}, {refit.decision}'), 'SetRewardParams')
        if reply is None:
            report.status = f'skipped: {why}'
            return
        report.reward_version = reply.version
        self.get_logger().info(
            f'update at env step {report.env_step}: tau {tau_before:.2f} -> '
            f'{refit.tau_after:.2f}, {refit.decision}, MH {refit.mh_s:.1f} s, acceptance '
            f'{result.acceptance_rate:.2f}, theta '
            + ', '.join(f'{k}={v:.4g}' for k, v in new_theta.items()))

    def close(self) -> None:
        """Let a running update finish publishing nothing (called before destroy_node)."""
        self._closing.set()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=1.0)


def main(args: list[str] | None = None) -> None:
    run_node(AlignmentNode, num_threads=3, args=args)


if __name__ == '__main__':
    main()
