"""`selfalign` command line: `train` (every node in one process) and `launch` (one per node).

    selfalign train --task push [--steps 100000] [--seed 0] [--llm scripted|openai|replay]
                    [--model M] [--base-url URL] [--obs state|pixels] [--run-dir DIR]
                    [--resume RUN_DIR] [--set node.param=value ...]
    selfalign launch ...        (same options)

``train`` builds the same nodes as ``ros2 launch selfalign_bringup <task>.launch.py`` from the
same configuration (``selfalign_bringup.wiring``) and spins them on one
``MultiThreadedExecutor``. ``launch`` starts each node's installed executable as its own process
(what ``ros2 launch`` does, for machines without launch_ros) and stops them all when training
is done or on Ctrl-C. Parameters
reach the nodes through a ``--params-file`` written into the run directory. Progress (env steps,
success rate, θ, LLM calls) is read from the run's own topics, so the runner needs no knowledge
of node internals. Ctrl-C stops cleanly: the policy writes a checkpoint, the monitor flushes
metrics, plots and the recording. ``--resume RUN_DIR`` reuses that run's config and continues
from its last checkpoint.
"""

from __future__ import annotations

import argparse
from collections import deque
from dataclasses import replace
import json
import os
from pathlib import Path
import sys
import threading
import time
from typing import Any

import yaml

from selfalign_bringup import wiring
from selfalign_bringup.rundir import RunDir
from selfalign_core import names as N

#: node name -> (module, class) of the node classes the embedded runner instantiates.
NODE_CLASSES = {
    'pybullet_bridge': ('selfalign_bringup.pybullet_bridge', 'PyBulletBridge'),
    'llm_node': ('selfalign_llm.llm_node', 'LLMNode'),
    'reward_node': ('selfalign_reward.reward_node', 'RewardNode'),
    'alignment_node': ('selfalign_reward.alignment_node', 'AlignmentNode'),
    'policy_node': ('selfalign_policy.policy_node', 'PolicyNode'),
    'monitor_node': ('selfalign_bringup.monitor_node', 'MonitorNode'),
}


def _parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """`node.param=value` (YAML value) -> {node: {param: value}}; errors name the item."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition('=')
        node, dot, param = key.partition('.')
        if not sep or not dot or not param:
            raise SystemExit(f'--set {item!r}: expected node.param=value, e.g. '
                             'alignment_node.reward_update_every_steps=2000')
        if node not in wiring.NODES and node != '/**':
            raise SystemExit(f'--set {item!r}: unknown node {node!r}; '
                             f'known: {sorted(wiring.NODES)}')
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='selfalign', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for command, text in (('train', 'train a task with every node in one process'),
                          ('launch', 'train a task with every node in its own process')):
        t = sub.add_parser(command, help=text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_run_options(t)
        if command == 'train':
            t.add_argument('--no-link', action='store_true',
                           help='the policy steps the in-process simulator bridge over DDS, '
                           'as separate processes do (default: directly, every topic still '
                           'published; docs/performance.md)')
    return parser


def _add_run_options(t: argparse.ArgumentParser) -> None:
    t.add_argument('--task', default='push', choices=sorted(wiring.TASK_CONFIGS))
    t.add_argument('--steps', type=int, default=None,
                   help='environment steps to train (default: policy_node.total_env_steps)')
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--llm', default='scripted', choices=wiring.LLM_BACKENDS,
                   help='scripted = simulated teacher (offline, no key)')
    t.add_argument('--model', default='', help='model for --llm openai')
    t.add_argument('--base-url', default='', help='OpenAI-compatible server for --llm openai')
    t.add_argument('--replay-transcript', default='', help='transcript.jsonl for --llm replay')
    t.add_argument('--obs', default='state', choices=wiring.OBS_KINDS)
    t.add_argument('--vision', action='store_true', help=wiring.ARG_HELP['vision'])
    t.add_argument('--namespace', default='', help=wiring.ARG_HELP['namespace'])
    t.add_argument('--workers', type=int, default=1, help=wiring.ARG_HELP['workers'])
    t.add_argument('--run-dir', default='', help='default: runs/<time>-<task>')
    t.add_argument('--runs-root', default='runs', help='parent of new run directories')
    t.add_argument('--resume', default='', metavar='RUN_DIR',
                   help='continue the run in RUN_DIR from its last checkpoint')
    t.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE',
                   help='override one node parameter (repeatable)')
    t.add_argument('--no-progress', action='store_true', help='no progress bar')


def prepare(ns: argparse.Namespace) -> tuple[RunDir, dict[str, dict[str, Any]], int]:
    """Resolve the configuration and the run directory; returns (run, config, steps)."""
    if ns.resume:
        run = RunDir.open_existing(ns.resume)
        config = run.read_config()
        config['/**']['resume'] = True  # policy: checkpoint; reward: reward_state.json
    else:
        args = wiring.Args(task=ns.task, llm=ns.llm, model=ns.model, base_url=ns.base_url,
                           obs=ns.obs, seed=ns.seed, run_dir=ns.run_dir,
                           replay_transcript=ns.replay_transcript,
                           vision=bool(getattr(ns, 'vision', False)),
                           namespace=getattr(ns, 'namespace', ''),
                           workers=int(getattr(ns, 'workers', 1)))
        try:
            args.validate()
        except wiring.ConfigError as exc:
            raise SystemExit(f'selfalign train: {exc}') from None
        run = RunDir(ns.run_dir) if ns.run_dir else RunDir.create(ns.runs_root, ns.task)
        config = wiring.resolve(replace(args, run_dir=str(run.path)))
        config['/**']['resume'] = False
    for node, params in _parse_set(ns.set).items():
        config.setdefault(node, {}).update(params)
    if ns.steps is not None:
        config.setdefault('policy_node', {})['total_env_steps'] = int(ns.steps)
    config['/**']['run_dir'] = str(run.path)
    steps = int(config.get('policy_node', {}).get('total_env_steps', 100000))
    run.write_config(config)
    return run, config, steps


class Progress:
    """Reads the run's topics, drives a tqdm bar, and signals when the policy says it is done."""

    def __init__(self, node, total_steps: int, start_step: int, show: bool):
        from std_msgs.msg import String

        from selfalign_core.qos import LATCHED
        from selfalign_interfaces.msg import Episode, RewardSpec

        self.total = total_steps
        self.step = start_step
        self.done = threading.Event()
        self._recent: deque[bool] = deque(maxlen=20)
        self._theta = ''
        self._llm_calls = 0
        self._bar = None
        if show:
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, unit='step',
                             dynamic_ncols=True, desc='train')
        node.create_subscription(Episode, N.EPISODE, self._on_episode, 50)
        node.create_subscription(RewardSpec, N.REWARD_SPEC, self._on_spec, LATCHED)
        node.create_subscription(String, N.LLM_USAGE, self._on_usage, 10)
        # The policy announces the end after its final checkpoint is written.
        node.create_subscription(String, N.POLICY_STATS, self._on_stats, 10)

    def _on_episode(self, msg) -> None:
        if not msg.evaluation:
            self._recent.append(bool(msg.success))
        if self._bar is not None:
            self._bar.update(max(0, int(msg.env_step) - self.step))
        self.step = max(self.step, int(msg.env_step))
        self._refresh()

    def _on_stats(self, msg) -> None:
        try:
            if json.loads(msg.data).get('kind') == 'done':
                self.done.set()
        except ValueError:
            pass

    def _on_spec(self, msg) -> None:
        self._theta = ' '.join(f'{n}={v:.3g}' for n, v in zip(msg.param_names, msg.param_values))
        self._refresh()

    def _on_usage(self, msg) -> None:
        try:
            self._llm_calls = int(json.loads(msg.data).get('calls', self._llm_calls))
        except (ValueError, AttributeError):
            pass

    def _refresh(self) -> None:
        if self._bar is None:
            return
        rate = sum(self._recent) / len(self._recent) if self._recent else 0.0
        self._bar.set_postfix_str(f'success {rate:.0%} | llm {self._llm_calls} | {self._theta}')

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _node_class(name: str):
    module, cls = NODE_CLASSES[name]
    return getattr(__import__(module, fromlist=[cls]), cls)


def _instance_options(plan: wiring.NodePlan, namespace: str) -> dict[str, Any]:
    """Node() options of one instance in the embedded run, where the process-wide arguments
    carry the params file and the run's namespace: an instance in its own namespace (a worker's
    bridge), with remaps (the monitor of a run with workers) or own parameters gets them here."""
    from rclpy.parameter import Parameter

    local = [*(['-r', f'__ns:=/{plan.namespace}'] if plan.namespace != namespace else []),
             *[a for src, dst in plan.remappings for a in ('-r', f'{src}:={dst}')]]
    options: dict[str, Any] = {}
    if local:
        options['cli_args'] = ['--ros-args', *local]
    if plan.overrides:
        options['parameter_overrides'] = [Parameter(k, value=v) for k, v in plan.overrides.items()]
    return options


def _ros_environment() -> None:
    """Stay on this machine and off other graphs unless the user chose otherwise."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str((os.getuid() + 17) % 100 + 1))


def _finish(run: RunDir, interrupted: bool) -> int:
    verb = 'stopped' if interrupted else 'finished'
    print(f'selfalign: {verb}; results in {run.path} (resume with: selfalign train --resume '
          f'{run.path})', file=sys.stderr)
    return 130 if interrupted else 0


def node_executable(package: str, executable: str) -> Path:
    """Installed path of a node executable (colcon install, found through ament_index)."""
    from ament_index_python.packages import get_package_prefix
    path = Path(get_package_prefix(package)) / 'lib' / package / executable
    if not path.exists():
        raise SystemExit(f'selfalign: {path} is missing; build the workspace (make setup)')
    return path


def _die_with_parent() -> None:
    """In a child, before exec: get SIGINT (clean node shutdown) when the launcher dies, even
    by SIGKILL, so no node outlives its launcher (Linux prctl PR_SET_PDEATHSIG; else no-op)."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def launch(ns: argparse.Namespace) -> int:
    """Every node of the plan as its own process; stop them when training is done."""
    import signal
    import subprocess

    run, config, steps = prepare(ns)
    _ros_environment()
    params = wiring.params_file(config, run.path / 'params.yaml')
    namespace = str(config['/**'].get('namespace') or '')
    args = wiring.Args(task=config['/**']['task'], namespace=namespace)
    procs: list[subprocess.Popen] = []
    import rclpy
    print(f'selfalign: launching {config["/**"]["task"]} for {steps} env steps (one process '
          f'per node); run directory {run.path}', file=sys.stderr, flush=True)
    rclpy.init()
    node = rclpy.create_node('selfalign_launch_progress', namespace=f'/{namespace}')
    progress = Progress(node, steps, run.last_env_step(), not ns.no_progress)
    interrupted = False
    try:
        for plan in wiring.plan(args, config):
            cmd = [str(node_executable(plan.package, plan.executable)),
                   *wiring.ros_args(plan, params)]
            procs.append(subprocess.Popen(cmd, start_new_session=True,
                                          preexec_fn=_die_with_parent))
        while not progress.done.is_set():
            rclpy.spin_once(node, timeout_sec=0.2)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(f'selfalign: {dead[0].args[0]} exited with {dead[0].returncode}; '
                      'stopping', file=sys.stderr)
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        if not interrupted:
            time.sleep(1.0)  # let the monitor write the last rows it received
        for p in procs:  # SIGINT = each node's clean shutdown path (checkpoint, flush)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        node.destroy_node()
        rclpy.try_shutdown()
    return _finish(run, interrupted)


def _run_bridge(spin: Any, node: Any, executor: Any, stop: threading.Event) -> None:
    """A bridge's thread in the embedded run. A bridge that fails ends the run (non-zero, its
    traceback logged), as its own process would, instead of leaving the policy waiting."""
    try:
        spin(node, executor, stop)
    except Exception:  # noqa: BLE001 - reported, then the whole run stops
        if stop.is_set() or not node.context.ok():
            return  # the run is ending (Ctrl-C shuts the context down under the bridge)
        import traceback

        import rclpy

        node.get_logger().fatal(f'bridge failed:\n{traceback.format_exc()}')
        node.exit_code = 1
        rclpy.try_shutdown(context=node.context)


def _link_in_process(nodes: dict[str, Any]) -> list[Any]:
    """Let the policy step each in-process lockstep bridge of its arms directly
    (``PyBulletBridge.link``, ``ArmPort.link``): the command and the state are still published
    for every other node, but the lockstep round trip through DDS is gone. Arms whose bridge
    is realtime or rehearses faults, or whose port takes pixels or key frames, keep the DDS
    path. Call before the bridges and the executor spin. Returns the linked bridges."""
    from selfalign_bringup.pybullet_bridge import PyBulletBridge
    from selfalign_policy.policy_node import PolicyNode

    bridges = {n.get_namespace(): n for n in nodes.values() if isinstance(n, PyBulletBridge)}
    linked = []
    for policy in (n for n in nodes.values() if isinstance(n, PolicyNode)):
        for port in policy.ports:
            ns = '/'.join(filter(None, (policy.get_namespace().rstrip('/'), port.name))) or '/'
            bridge = bridges.get(ns)
            if bridge is None or bridge.link_refusal() or port.link_refusal():
                continue
            port.link(bridge.link())
            linked.append(bridge)
    return linked


def train(ns: argparse.Namespace) -> int:
    """Every node in this process: the bridges each on their own thread (their lockstep wait
    set, as in their own process), the others on one MultiThreadedExecutor (spun on a
    background thread)."""
    run, config, steps = prepare(ns)
    _ros_environment()
    params = wiring.params_file(config, run.path / 'params.yaml')
    import rclpy

    from selfalign_bringup.pybullet_bridge import PyBulletBridge, spin_bridge
    from selfalign_core.executors import (
        MultiThreadedExecutor,
        signals_deferred,
        SingleThreadedExecutor,
        spin_quietly,
    )
    from selfalign_core.polled import SharedSimClock

    print(f'selfalign: training {config["/**"]["task"]} for {steps} env steps; '
          f'run directory {run.path}', file=sys.stderr, flush=True)
    namespace = str(config['/**'].get('namespace') or '')
    remap_ns = ['-r', f'__ns:=/{namespace}'] if namespace else []
    rclpy.init(args=['--ros-args', '--params-file', str(params), *remap_ns])
    nodes: dict[str, Any] = {}
    executor = MultiThreadedExecutor(num_threads=3)
    bridges_stop = threading.Event()
    bridge_threads: list[threading.Thread] = []
    progress = sim_clock = None
    try:
        plans = wiring.plan(wiring.Args(task=config['/**']['task'], namespace=namespace), config)
        for plan in sorted(plans, key=lambda p: list(NODE_CLASSES).index(p.name)):
            key = '/'.join(filter(None, (plan.namespace, plan.name)))
            nodes[key] = _node_class(plan.name)(**_instance_options(plan, namespace))
        nodes['_progress'] = rclpy.create_node('selfalign_train_progress')
        progress = Progress(nodes['_progress'], steps, run.last_env_step(), not ns.no_progress)
        linked = [] if ns.no_link else _link_in_process(nodes)
        # the nodes' clocks follow sim time, off the shared executor: set by the /clock
        # bridge as it publishes when it is linked, else from one /clock subscription
        clock_bridge = next((b for b in linked if b.cfg.publish_clock), None)
        sim_clock = SharedSimClock(nodes['_progress'], list(nodes.values()),
                                   subscribe=clock_bridge is None)
        if clock_bridge is not None:
            clock_bridge.clock_listeners.append(sim_clock.feed)
        for key, node in nodes.items():
            if not isinstance(node, PyBulletBridge):
                executor.add_node(node)
                continue
            # per-step commands off the shared executor, whose every wake-up rebuilds its
            # wait set over all nodes' entities (docs/performance.md)
            own = SingleThreadedExecutor()
            own.add_node(node)
            bridge_threads.append(threading.Thread(target=_run_bridge, name=key, daemon=True,
                                                   args=(spin_bridge, node, own, bridges_stop)))
        for thread in bridge_threads:
            thread.start()
        threading.Thread(target=spin_quietly, args=(executor,), daemon=True).start()
        while rclpy.ok() and not progress.done.wait(timeout=0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        interrupted = progress is None or not progress.done.is_set()
        with signals_deferred():  # a second Ctrl-C must not cut the checkpoint off
            if progress is not None:
                progress.close()
            # close(): the policy stops and writes its checkpoint, the monitor flushes its files
            for node in reversed(list(nodes.values())):
                if hasattr(node, 'close'):
                    node.close()
            executor.shutdown(timeout_sec=5)
            bridges_stop.set()
            for thread in bridge_threads:
                thread.join(timeout=5)
            if sim_clock is not None:
                sim_clock.close()
            for node in nodes.values():
                node.destroy_node()
            rclpy.try_shutdown()
    failed = [n for n, node in nodes.items() if getattr(node, 'exit_code', 0)]
    if failed:  # the node logged why; nothing was written over the run directory
        print(f'selfalign: {", ".join(failed)} failed; see its log above', file=sys.stderr)
        return 1
    return _finish(run, interrupted)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return {'train': train, 'launch': launch}[ns.command](ns)


if __name__ == '__main__':
    raise SystemExit(main())
