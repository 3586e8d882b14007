"""reward_node: owns the reward in force and publishes it latched as a RewardSpec.

At start it obtains the reward template — from llm_node (ProposeReward, with bounded repair
retries fed with the validation error) when ``use_llm`` is true, otherwise (or when the LLM fails
or times out, with a warning) from ``template_file`` or the shipped reference template of the
task — validates it (AST allow-list + sandboxed trial run) and publishes it. Later changes:
SetRewardParams (θ, from alignment_node) and whole new templates published on
``/selfalign/reward_proposal``; a proposal that fails validation leaves the last good reward in
force. Every change bumps ``version`` and re-publishes.

Parameters:
  task (str): 'touch' | 'grasp_lift' | 'push'.
  template_file (str): path of a template in the source format; '' = the stored one for task.
  use_llm (bool): ask /selfalign/propose_reward for the initial template.
  llm_call_deadline_s (float): llm_node's budget for one call (shared, llm.yaml's ``/**``); this
      node waits that plus ``LLM_WAIT_MARGIN_S`` (discovery, transport).
  llm_repair_attempts (int): extra ProposeReward calls with the validation error, when invalid.
  run_dir (str): run directory; the reward in force is kept in <run_dir>/reward_state.json.
  resume (bool): start from <run_dir>/reward_state.json when it exists (no new proposal).
Subscribes:
  /selfalign/reward_proposal (selfalign_interfaces/RewardSpec): candidate new templates.
Publishes:
  /selfalign/reward_spec (selfalign_interfaces/RewardSpec, reliable + transient local, depth 1).
Services:
  /selfalign/set_reward_params (selfalign_interfaces/SetRewardParams).
Clients:
  /selfalign/propose_reward (selfalign_interfaces/ProposeReward).
"""

from __future__ import annotations

from pathlib import Path
import threading

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from selfalign_core import names as N
from selfalign_core.executors import run_node
from selfalign_core.qos import LATCHED
from selfalign_core.services import call_with_resend
from selfalign_core.tasks import get_task
from selfalign_interfaces.msg import RewardSpec
from selfalign_interfaces.srv import ProposeReward, SetRewardParams
from selfalign_reward.msgs import spec_to_msg
from selfalign_reward.store import RewardStore
from selfalign_reward.template import reference_template_source

LLM_CALL_DEADLINE_S = 300.0
"""Default budget of one LLM role call (llm_node's ``llm_call_deadline_s``), s."""
LLM_WAIT_MARGIN_S = 30.0
"""What a caller waits beyond the call's deadline: service discovery and transport, s."""


def llm_wait_s(call_deadline_s: float) -> float:
    """How long a caller of llm_node waits for one reply, s: the deadline plus the margin."""
    return float(call_deadline_s) + LLM_WAIT_MARGIN_S


class RewardNode(Node):
    """See the module docstring."""

    #: the clock only stamps logs and the spec header: it follows sim time at most 20 times
    #: a second (wall), not once per sim step (selfalign_core.polled.SharedSimClock)
    SIM_CLOCK_MIN_PERIOD_S = 0.05

    def __init__(self) -> None:
        super().__init__('reward_node')
        self.task = self.declare_parameter('task', 'push', ParameterDescriptor(
            description="task name: 'touch' | 'grasp_lift' | 'push'", read_only=True)).value
        self.template_file = self.declare_parameter('template_file', '', ParameterDescriptor(
            description="reward template source file; '' = the stored template for task",
            read_only=True)).value
        self.use_llm = self.declare_parameter('use_llm', False, ParameterDescriptor(
            description='obtain the initial reward from /selfalign/propose_reward')).value
        self.llm_timeout_s = llm_wait_s(self.declare_parameter(
            'llm_call_deadline_s', LLM_CALL_DEADLINE_S, ParameterDescriptor(
                description="llm_node's budget for one call, s (shared with llm_node); this "
                            f'node waits {LLM_WAIT_MARGIN_S:g} s longer',
                floating_point_range=[FloatingPointRange(from_value=1.0,
                                                         to_value=86400.0)])).value)
        self.llm_repair_attempts = self.declare_parameter(
            'llm_repair_attempts', 2, ParameterDescriptor(
                description='extra ProposeReward calls carrying the validation error',
                integer_range=[IntegerRange(from_value=0, to_value=10, step=1)])).value
        run_dir = self.declare_parameter('run_dir', '', ParameterDescriptor(
            description="run directory ('' = keep nothing on disk)", read_only=True)).value
        self.resume = self.declare_parameter('resume', False, ParameterDescriptor(
            description='continue with the reward saved in run_dir', read_only=True)).value
        self.state_file = Path(run_dir) / 'reward_state.json' if run_dir else None
        get_task(self.task)  # ValueError lists the valid tasks
        self.store = RewardStore()
        self._pub = self.create_publisher(RewardSpec, N.REWARD_SPEC, LATCHED)
        self._service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(SetRewardParams, N.SET_REWARD_PARAMS, self._on_set_params,
                            callback_group=self._service_group)
        self.create_subscription(RewardSpec, N.REWARD_PROPOSAL, self._on_proposal, 10,
                                 callback_group=self._service_group)
        self._client = self.create_client(ProposeReward, N.PROPOSE_REWARD,
                                          callback_group=ReentrantCallbackGroup())
        self.get_logger().info(
            f'reward_node: task={self.task} use_llm={self.use_llm} '
            f'template_file={self.template_file!r} llm_timeout_s={self.llm_timeout_s}')
        # The LLM call blocks, so it runs on a worker; the executor keeps serving meanwhile.
        self._closing = threading.Event()
        self._startup = threading.Thread(target=self._obtain_initial, daemon=True)
        self._startup.start()

    # ------------------------------------------------------------------ start-up
    def _fallback_source(self) -> tuple[str, str]:
        if self.template_file:
            return Path(self.template_file).read_text(encoding='utf-8'), \
                f'file:{self.template_file}'
        return reference_template_source(self.task), f'template:{self.task}'

    def _ask_llm(self) -> bool:
        if not self._client.wait_for_service(timeout_sec=self.llm_timeout_s):
            self.get_logger().warning(
                f'/selfalign/propose_reward not available within {self.llm_timeout_s} s; '
                'using the stored template')
            return False
        previous, error = '', ''
        for attempt in range(1 + self.llm_repair_attempts):
            if self._closing.is_set():
                return False
            req = ProposeReward.Request(task=self.task,
                                        task_description=get_task(self.task).description,
                                        previous_code=previous, error=error)
            # re-sent (same request_id) if its reply is lost; llm_node calls the LLM once
            reply, why = call_with_resend(self._client, req, self.llm_timeout_s,
                                          stop=self._closing)
            if reply is None or not reply.success:
                why = why if reply is None else reply.message
                self.get_logger().warning(f'ProposeReward failed ({why}); using the stored '
                                          'template')
                return False
            code = reply.spec.code
            ok, error = self.store.adopt(code, f'llm:{reply.model or "unknown"}')
            if ok:
                return True
            previous = code
            self.get_logger().warning(f'LLM reward (attempt {attempt + 1}) failed validation: '
                                      f'{error}')
        return False

    def _restore(self) -> bool:
        if not (self.resume and self.state_file is not None and self.state_file.is_file()):
            return False
        ok, error = self.store.restore(self.state_file)
        if not ok:
            self.get_logger().warning(f'{error}; obtaining a new reward')
        return ok

    def _obtain_initial(self) -> None:
        try:
            if self._restore():
                self.get_logger().info(f'resumed the reward saved in {self.state_file}')
            elif not (self.use_llm and self._ask_llm()):
                code, source = self._fallback_source()
                ok, error = self.store.adopt(code, source)
                if not ok:
                    self.get_logger().error(f'stored template {source} is invalid: {error}')
                    return
            self._publish()
        except Exception as exc:  # noqa: BLE001 - report, never kill the process from a thread
            self.get_logger().error(f'could not obtain the initial reward: {exc}')

    # ------------------------------------------------------------------ callbacks
    def _publish(self) -> None:
        state = self.store.state
        if state is None:
            return
        if self.state_file is not None:
            self.store.save(self.state_file)
        msg = spec_to_msg(state.template, state.theta, state.version, state.source, self.task)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pub.publish(msg)
        theta = ', '.join(f'{k}={v:.4g}' for k, v in state.theta.items())
        self.get_logger().info(f'reward v{state.version} ({state.source}): {theta}')

    def _on_set_params(self, request: SetRewardParams.Request,
                       response: SetRewardParams.Response) -> SetRewardParams.Response:
        ok, message, version = self.store.set_params(list(request.param_names),
                                                     list(request.param_values))
        response.success, response.message, response.version = ok, message, version
        if ok:
            if request.reason:
                self.get_logger().info(f'set_reward_params: {request.reason}')
            self._publish()
        else:
            self.get_logger().warning(f'set_reward_params rejected: {message}')
        return response

    def _on_proposal(self, msg: RewardSpec) -> None:
        theta = dict(zip(msg.param_names, msg.param_values))
        ok, error = self.store.adopt(msg.code, msg.source or 'proposal', theta)
        if ok:
            self._publish()
        else:
            self.get_logger().warning(f'reward proposal rejected, keeping the last good reward: '
                                      f'{error}')

    def close(self) -> None:
        """Stop the start-up worker (called before destroy_node by the embedded runner)."""
        self._closing.set()
        self._startup.join(timeout=1.0)


def main(args: list[str] | None = None) -> None:
    run_node(RewardNode, num_threads=2, args=args)


if __name__ == '__main__':
    main()
