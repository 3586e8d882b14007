"""llm_node: serves the LLM roles (propose reward, rank trajectories, analyse failure) over ROS.

A thin wrapper around ``selfalign_llm.client.LLMClient``: messages -> EpisodeRecords /
RewardTemplates (``selfalign_reward.msgs``), one client call, results -> response. LLM calls
take seconds to minutes, so each service runs in a ReentrantCallbackGroup on a
MultiThreadedExecutor: the node keeps answering (and other calls proceed) while one waits.
Failures (no key, HTTP errors, unparsable replies after the re-asks, templates that fail
validation after the repairs) come back as ``success: false`` with a message, never a crash.
A request re-sent with the same ``request_id`` (its reply was lost) is answered from the first
call: ``pending: true`` while that runs, its answer after; the LLM is called once
(``selfalign_core.services``).
The API key is read from OPENAI_API_KEY only and never logged.

Parameters:
    backend (str, 'scripted'): scripted | openai | replay.
    model (str, 'gpt-4o'): model name (openai backend).
    base_url (str, ''): OpenAI-compatible server URL; '' = api.openai.com.
    temperature (float, 0.0): sampling temperature.
    timeout_s (float, 60.0): per-request timeout, s.
    max_retries (int, 2): retries inside the openai client (429/5xx/timeouts).
    outer_retries (int, 2): client-level retries after a transport failure.
    llm_call_deadline_s (float, 300.0): budget of one role call (every request, retry, re-ask,
        repair, wait); shared with reward_node and alignment_node in llm.yaml's ``/**`` block.
    retry_backoff_s (float, 2.0): first outer-retry wait, s (doubles).
    max_tokens (int, 0): completion token limit; 0 = server default.
    max_reasks (int, 2): re-asks after an unparsable reply.
    max_repairs (int, 3): repair rounds after a template fails validation.
    vision (bool, false): send each episode's key frames (Episode.key_frames, see policy_node
        key_frames) as labelled images ('Episode i, step s:') with ranking and failure-analysis
        prompts (openai backend; the scripted teacher ignores them and says so at start).
    transcript_path (str, ''): transcript.jsonl of this run; '' = memory only.
    replay_path (str, ''): transcript to replay (backend 'replay').
    teacher_beta (float, 20.0): scripted teacher Boltzmann inverse temperature (<= 0: noiseless).
    teacher_mistake_rate (float, 0.1): scripted teacher expected fraction of wrong pairs.
    teacher_tie_margin (float, 0.05): scripted teacher progress margin for ties.
    seed (int, 0): scripted teacher seed.
    usage_period_s (float, 5.0): period of the usage message, s.

Services:
    /selfalign/propose_reward (selfalign_interfaces/ProposeReward)
    /selfalign/rank_trajectories (selfalign_interfaces/RankTrajectories)
    /selfalign/analyze_failure (selfalign_interfaces/AnalyzeFailure)

Subscribes:
    (nothing)

Publishes:
    /selfalign/llm_usage (std_msgs/String, JSON totals: calls, ok, failures, tokens, by outcome
    and role, backend, model; reliable + transient local, depth 1)
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from selfalign_core import names as N
from selfalign_core.executors import run_node
from selfalign_core.qos import LATCHED
from selfalign_core.services import AnswerOnce
from selfalign_interfaces.srv import AnalyzeFailure, ProposeReward, RankTrajectories
from selfalign_llm.backends.base import BackendError
from selfalign_llm.client import LLMError
from selfalign_llm.config import BACKENDS, LLMConfig, make_client
from selfalign_reward.msgs import (
    episode_from_msg,
    key_frames_from_msg,
    spec_from_msg,
    spec_to_msg,
)
from selfalign_reward.template import TemplateError

_ERRORS = (LLMError, BackendError, TemplateError, ValueError, KeyError)


def _float(lo: float, hi: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=lo, to_value=hi)]


def _int(lo: int, hi: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=lo, to_value=hi)]


class LLMNode(Node):
    """ROS services over an LLMClient built from the node's parameters."""

    #: the clock only stamps logs and the usage timer: it follows sim time at most 20 times
    #: a second (wall), not once per sim step (selfalign_core.polled.SharedSimClock)
    SIM_CLOCK_MIN_PERIOD_S = 0.05

    def __init__(self) -> None:
        super().__init__('llm_node')
        d = SimpleNamespace(**LLMConfig().flat())
        specs: list[tuple[str, Any, str, dict[str, Any]]] = [
            ('backend', d.backend, f'which LLM answers: {" | ".join(BACKENDS)}', {}),
            ('model', d.model, 'model name (openai backend)', {}),
            ('base_url', d.base_url, "OpenAI-compatible server URL; '' = api.openai.com", {}),
            ('temperature', d.temperature, 'sampling temperature',
             {'floating_point_range': _float(0.0, 2.0)}),
            ('timeout_s', d.timeout_s, 'per-request timeout, s',
             {'floating_point_range': _float(0.1, 3600.0)}),
            ('max_retries', d.max_retries, 'retries inside the openai client (429/5xx/timeout)',
             {'integer_range': _int(0, 20)}),
            ('outer_retries', d.outer_retries, 'client-level retries after transport failures',
             {'integer_range': _int(0, 20)}),
            ('retry_backoff_s', d.retry_backoff_s, 'first outer-retry wait, s (doubles)',
             {'floating_point_range': _float(0.0, 600.0)}),
            ('llm_call_deadline_s', d.llm_call_deadline_s,
             'budget of one role call, every request, retry and re-ask included, s',
             {'floating_point_range': _float(1.0, 86400.0)}),
            ('max_tokens', d.max_tokens, 'completion token limit; 0 = server default',
             {'integer_range': _int(0, 1_000_000)}),
            ('max_reasks', d.max_reasks, 're-asks after an unparsable reply',
             {'integer_range': _int(0, 10)}),
            ('max_repairs', d.max_repairs, 'repair rounds after a template fails validation',
             {'integer_range': _int(0, 10)}),
            ('vision', d.vision, 'send key frames as images when available', {}),
            ('transcript_path', d.transcript_path,
             "transcript.jsonl of this run (every prompt and reply); '' = memory only", {}),
            ('replay_path', d.replay_path, "transcript to replay (backend 'replay')", {}),
            ('teacher_beta', d.teacher_beta,
             'scripted teacher: Boltzmann inverse temperature over progress; <= 0 = noiseless',
             {'floating_point_range': _float(0.0, 1e6)}),
            ('teacher_mistake_rate', d.teacher_mistake_rate,
             'scripted teacher: expected fraction of episode pairs ranked wrongly',
             {'floating_point_range': _float(0.0, 0.5)}),
            ('teacher_tie_margin', d.teacher_tie_margin,
             'scripted teacher: progress difference within which neighbours are tied',
             {'floating_point_range': _float(0.0, 10.0)}),
            ('seed', d.seed, 'scripted teacher random seed', {}),
        ]
        values = {}
        for name, default, description, extra in specs:
            values[name] = self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=True,
                                                   **extra)).value
        usage_period_s = self.declare_parameter('usage_period_s', 5.0, ParameterDescriptor(
            description='period of the /selfalign/llm_usage message, s',
            floating_point_range=_float(0.1, 3600.0))).value
        self.config = LLMConfig.from_dict(values)
        self.client = make_client(self.config)
        # Key frames are decoded and sent only when the backend can look at them.
        self._vision = bool(self.config.vision) and bool(getattr(self.client.backend, 'vision',
                                                                 False))
        if self.config.vision and not self._vision:
            self.get_logger().warning(
                f'vision:=true, but the {self.config.backend} backend reads episode features '
                'only: key frames are ignored (the scripted teacher ranks by task progress)')
        self.get_logger().info(
            f'LLM backend={self.config.backend} model={self.client.model} '
            f'base_url={self.config.openai.base_url or "(default)"} '
            f'timeout_s={self.config.openai.timeout_s} '
            f'max_retries={self.config.openai.max_retries} max_reasks={self.config.max_reasks} '
            f'llm_call_deadline_s={self.config.llm_call_deadline_s} '
            f'max_repairs={self.config.max_repairs} transcript={self.config.transcript_path!r}')

        group = ReentrantCallbackGroup()
        self._usage_pub = self.create_publisher(String, N.LLM_USAGE, LATCHED)
        # A caller re-sends a request whose reply was lost (same request_id): answer it from
        # the first call, never by calling the LLM again (selfalign_core.services).
        once = AnswerOnce(log=self.get_logger().info)
        self.create_service(ProposeReward, N.PROPOSE_REWARD, once(self._on_propose),
                            callback_group=group)
        self.create_service(RankTrajectories, N.RANK_TRAJECTORIES, once(self._on_rank),
                            callback_group=group)
        self.create_service(AnalyzeFailure, N.ANALYZE_FAILURE, once(self._on_analyze),
                            callback_group=group)
        self.create_timer(usage_period_s, self._publish_usage, callback_group=group)
        self._publish_usage()

    def _publish_usage(self) -> None:
        totals = self.client.usage()
        totals.update(backend=self.config.backend, model=self.client.model)
        self._usage_pub.publish(String(data=json.dumps(totals, sort_keys=True)))

    def _done(self, role: str, start: float, ok: bool, message: str = '') -> None:
        latency = time.monotonic() - start
        if ok:
            self.get_logger().info(f'{role}: ok in {latency:.2f} s (model {self.client.model})')
        else:
            self.get_logger().error(f'{role}: failed after {latency:.2f} s: {message}')
        self._publish_usage()

    def _on_propose(self, req: ProposeReward.Request, resp: ProposeReward.Response
                    ) -> ProposeReward.Response:
        start = time.monotonic()
        try:
            template, plan = self.client.propose_reward(
                req.task, req.task_description, req.previous_code, req.error)
            model = self.client.model
            source = f'llm:{model}' if self.config.backend == 'openai' else model
            resp.spec = spec_to_msg(template, None, version=0, source=source, task=req.task)
            resp.plan = plan
            resp.success = True
        except _ERRORS as exc:
            resp.success, resp.message = False, str(exc)
        resp.model = self.client.model
        self._done('propose_reward', start, resp.success, resp.message)
        return resp

    def _frames(self, episodes: list) -> list[list] | None:
        """The episodes' key frames when vision is on (decoded only then)."""
        if not self._vision:
            return None
        return [key_frames_from_msg(m) for m in episodes]

    def _on_rank(self, req: RankTrajectories.Request, resp: RankTrajectories.Response
                 ) -> RankTrajectories.Response:
        start = time.monotonic()
        try:
            episodes = [episode_from_msg(m) for m in req.episodes]
            ranking = self.client.rank_detailed(req.task, episodes, req.task_description,
                                                episode_frames=self._frames(req.episodes))
            resp.ranks = [int(r) for r in ranking.ranks]
            resp.descriptions = ranking.descriptions
            resp.success = True
        except _ERRORS as exc:
            resp.success, resp.message = False, str(exc)
        resp.model = self.client.model
        self._done('rank_trajectories', start, resp.success, resp.message)
        return resp

    def _on_analyze(self, req: AnalyzeFailure.Request, resp: AnalyzeFailure.Response
                    ) -> AnalyzeFailure.Response:
        start = time.monotonic()
        try:
            template, theta, _, _ = spec_from_msg(req.spec)
            episodes = [episode_from_msg(m) for m in req.episodes]
            analysis, proposal = self.client.analyze_failure(
                req.task, template, theta, episodes, req.success_rate, req.rank_agreement,
                req.task_description, episode_frames=self._frames(req.episodes))
            resp.analysis = analysis
            resp.param_names = list(proposal)
            resp.param_values = [float(v) for v in proposal.values()]
            resp.success = True
        except _ERRORS as exc:
            resp.success, resp.message = False, str(exc)
        resp.model = self.client.model
        self._done('analyze_failure', start, resp.success, resp.message)
        return resp


def main(args: list[str] | None = None) -> None:
    run_node(LLMNode, num_threads=4, args=args)


if __name__ == '__main__':
    main()
