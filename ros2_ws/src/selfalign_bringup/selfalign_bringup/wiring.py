"""The one description of a selfalign run: which nodes, with which parameters and remaps.

Pure (yaml only, no rclpy, no launch). Three users share it, so they cannot drift apart:

* ``launch/*.launch.py`` turn each ``NodePlan`` into a ``launch_ros.actions.Node``;
* the all-in-one ``train`` runner builds the same nodes in one process from the same parameters;
* the multi-process end-to-end test starts the same executables with ``--ros-args``.

Configuration sources, later wins: ``config/<task>.yaml`` (one block per node, ``/**`` for shared
values), ``config/llm.yaml``, then the launch arguments (``Args``). Remaps for an external driver
come from ``config/external_driver.yaml`` only.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
import os
from pathlib import Path
import re
from typing import Any

import yaml

from selfalign_core import names as N
from selfalign_core.names import under, worker_name

TASK_CONFIGS = {'touch': 'touch.yaml', 'grasp_lift': 'grasp_lift.yaml', 'push': 'push.yaml'}
LLM_BACKENDS = ('scripted', 'openai', 'replay')
OBS_KINDS = ('state', 'pixels')
DRIVERS = ('pybullet', 'external')

#: Node name -> (package, executable). The naming rule: executable == node name == module stem.
NODES: dict[str, tuple[str, str]] = {
    'pybullet_bridge': ('selfalign_bringup', 'pybullet_bridge'),
    'policy_node': ('selfalign_policy', 'policy_node'),
    'reward_node': ('selfalign_reward', 'reward_node'),
    'alignment_node': ('selfalign_reward', 'alignment_node'),
    'llm_node': ('selfalign_llm', 'llm_node'),
    'monitor_node': ('selfalign_bringup', 'monitor_node'),
}


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and the fix."""


#: Launch argument -> help text (shown by `ros2 launch ... --show-args`).
ARG_HELP: dict[str, str] = {
    'task': 'touch | grasp_lift | push',
    'llm': 'LLM backend: scripted (simulated teacher, offline) | openai (any OpenAI-compatible '
           'server; key from OPENAI_API_KEY) | replay (re-play a transcript.jsonl)',
    'model': "model name for llm:=openai ('' keeps config/llm.yaml's)",
    'base_url': "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 ('' = llm.yaml's)",
    'obs': 'policy observations: state | pixels',
    'driver': 'pybullet: start the simulator bridge | external: use a running driver '
              '(remaps from config/external_driver.yaml)',
    'run_dir': "run directory; '' = runs/<time>-<task>",
    'seed': 'seed of every random generator of the run',
    'use_sim_time': 'nodes use /clock (true with the simulator, false on hardware)',
    'replay_transcript': 'transcript.jsonl to replay when llm:=replay',
    'namespace': "run every node under this namespace, e.g. arm_0 (all topic and service names "
                 "are relative, so the run moves with it); '' = root",
    'workers': 'arms to train on at once: N > 1 starts N simulator bridges (own processes and '
               'seeds) under arm_0 ... arm_{N-1}, stepped by one policy (one batched forward '
               'pass, one replay); with driver:=external, N drivers must serve those namespaces',
    'vision': 'attach key camera frames of each episode to the ranking and failure-analysis '
              'prompts, for a vision model (llm:=openai)',
}

#: The most arms one policy steps (workers:=N).
MAX_WORKERS = 64

#: With vision: key frames per episode, and the bridge's key-frame period (steps).
VISION_KEY_FRAMES = 4
VISION_KEY_FRAME_EVERY_STEPS = 25


@dataclass(frozen=True)
class Args:
    """Launch arguments (``ros2 launch selfalign_bringup push.launch.py name:=value``).

    See ``ARG_HELP`` for the meaning of each field.
    """

    task: str = 'push'
    llm: str = 'scripted'
    model: str = ''
    base_url: str = ''
    obs: str = 'state'
    driver: str = 'pybullet'
    run_dir: str = ''
    seed: int = 0
    use_sim_time: bool = True
    replay_transcript: str = ''
    vision: bool = False
    namespace: str = ''
    workers: int = 1

    def validate(self) -> Args:
        choices = {'task': tuple(TASK_CONFIGS), 'llm': LLM_BACKENDS, 'obs': OBS_KINDS,
                   'driver': DRIVERS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f'{name}:={value!r} is not valid; use one of {list(allowed)}')
        ns = self.namespace.strip('/')
        if ns and not re.fullmatch(r'[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*', ns):
            raise ConfigError(f'namespace:={self.namespace!r} is not a ROS namespace; use '
                              'letters, digits and _ (starting with a letter), e.g. arm_0')
        if not 1 <= int(self.workers) <= MAX_WORKERS:
            raise ConfigError(f'workers:={self.workers!r} is out of range; use 1 to '
                              f'{MAX_WORKERS}')
        if self.llm == 'replay' and not self.replay_transcript:
            raise ConfigError('llm:=replay needs replay_transcript:=<run_dir>/transcript.jsonl')
        return self


_TRUE, _FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')


def parse_bool(name: str, value: str) -> bool:
    """A launch argument's boolean; ConfigError naming ``name:=`` for anything else."""
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f'{name}:={value!r} is not a boolean; use true or false')


def args_from_strings(task: str, raw: dict[str, str]) -> Args:
    """Launch arguments as ``ros2 launch`` hands them over (strings) -> validated Args."""
    def integer(name: str, default: str, example: str) -> int:
        try:
            return int(raw.get(name, default))
        except ValueError:
            raise ConfigError(f'{name}:={raw[name]!r} is not an integer; use e.g. '
                              f'{name}:={example}') from None

    seed = integer('seed', '0', '0')
    workers = integer('workers', '1', '2')
    return Args(task=task, llm=raw.get('llm', 'scripted'), model=raw.get('model', ''),
                base_url=raw.get('base_url', ''), obs=raw.get('obs', 'state'),
                driver=raw.get('driver', 'pybullet'), run_dir=raw.get('run_dir', ''),
                seed=seed, use_sim_time=parse_bool('use_sim_time',
                                                   raw.get('use_sim_time', 'true')),
                replay_transcript=raw.get('replay_transcript', ''),
                vision=parse_bool('vision', raw.get('vision', 'false')),
                namespace=raw.get('namespace', ''), workers=workers).validate()


@dataclass
class NodePlan:
    """One node of the run."""

    name: str
    package: str
    executable: str
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    namespace: str = ''
    """'' (root) or e.g. 'arm_0'."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Parameters of this instance that differ from its node's block (a worker's bridge:
    seed, publish_clock); already merged into ``parameters``."""


def config_dir() -> Path:
    """The installed ``share/selfalign_bringup/config`` (or the source tree's, when not built)."""
    try:
        from ament_index_python.packages import get_package_share_directory
        path = Path(get_package_share_directory('selfalign_bringup')) / 'config'
        if path.is_dir():
            return path
    except (ImportError, LookupError):
        pass
    return Path(__file__).resolve().parent.parent / 'config'


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f'{path}: not valid YAML ({exc}); fix the file and retry') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: top level must be a mapping of node names to blocks')
    out = {}
    for node, block in data.items():
        params = (block or {}).get('ros__parameters') if isinstance(block, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f'{path}: block {node!r} must contain a "ros__parameters" mapping')
        if node != '/**' and node not in NODES:
            raise ConfigError(f'{path}: unknown node {node!r}; known nodes: {sorted(NODES)}')
        out[node] = params
    return out


def _merge(base: dict[str, dict], extra: dict[str, dict]) -> dict[str, dict]:
    merged = copy.deepcopy(base)
    for node, params in extra.items():
        merged.setdefault(node, {}).update(params)
    return merged


def resolve(args: Args, directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per-node parameters of a run, ``{'/**': {...}, 'policy_node': {...}, ...}``."""
    args.validate()
    directory = directory or config_dir()
    config = _merge(_load_yaml(directory / TASK_CONFIGS[args.task]),
                    _load_yaml(directory / 'llm.yaml'))
    shared = config.setdefault('/**', {})
    shared.update(task=args.task, seed=int(args.seed), use_sim_time=bool(args.use_sim_time),
                  run_dir=str(args.run_dir), namespace=args.namespace.strip('/'))
    llm = config.setdefault('llm_node', {})
    llm['backend'] = args.llm
    if args.model:
        llm['model'] = args.model
    if args.base_url:
        llm['base_url'] = args.base_url
    if args.replay_transcript:
        llm['replay_path'] = args.replay_transcript
    if args.run_dir:
        llm['transcript_path'] = str(Path(args.run_dir) / 'transcript.jsonl')
    config.setdefault('policy_node', {})['obs'] = args.obs
    config['policy_node']['workers'] = int(args.workers)
    config.setdefault('pybullet_bridge', {})['publish_camera'] = args.obs == 'pixels'
    if args.vision:  # the bridge renders key frames, the policy attaches them, the LLM sees them
        llm['vision'] = True
        config['policy_node']['key_frames'] = VISION_KEY_FRAMES
        config['pybullet_bridge']['key_frame_every_steps'] = VISION_KEY_FRAME_EVERY_STEPS
    return config


def default_run_dir(task: str, root: str | os.PathLike = 'runs') -> str:
    """A fresh ``runs/<time>-<task>`` path (created)."""
    from selfalign_bringup.rundir import RunDir
    return str(RunDir.create(root, task).path)


#: What monitor_node reads from the robot (with workers > 1: the first arm's).
MONITORED_TOPICS = (N.EE_POSE, N.OBJECT_POSE, N.GOAL_POSE, N.VIDEO_IMAGE)


def plan(args: Args, config: dict[str, dict[str, Any]] | None = None,
         directory: Path | None = None) -> list[NodePlan]:
    """The nodes of a run with their merged parameters (``/**`` folded in) and remaps."""
    config = config if config is not None else resolve(args, directory)
    directory = directory or config_dir()
    remaps: list[tuple[str, str]] = []
    if args.driver == 'external':
        table = yaml.safe_load((directory / 'external_driver.yaml').read_text()) or {}
        remaps = [(str(k), str(v)) for k, v in (table.get('remappings') or {}).items()]
    namespace = args.namespace.strip('/')
    workers = int(config.get('policy_node', {}).get('workers', 1))
    if workers > 1:  # drivers under arm_i (remaps of config/external_driver.yaml do not apply)
        remaps = []
    plans = []
    for name, (package, executable) in NODES.items():
        if name == 'pybullet_bridge' and args.driver == 'external':
            continue
        params = {**config.get('/**', {}), **config.get(name, {})}
        node_remaps = remaps if name in ('policy_node', 'monitor_node') else []
        if name == 'monitor_node' and workers > 1:  # it shows (and films) the first arm
            node_remaps = [(topic, under(worker_name(0), topic)) for topic in MONITORED_TOPICS]
        if name == 'pybullet_bridge' and workers > 1:
            for i in range(workers):  # own process, own namespace, own seed; one /clock
                own = {'seed': int(params.get('seed', 0)) + i, 'publish_clock': i == 0}
                plans.append(NodePlan(name, package, executable, {**params, **own}, [],
                                      '/'.join(filter(None, (namespace, worker_name(i)))),
                                      own))
            continue
        plans.append(NodePlan(name, package, executable, params, list(node_remaps), namespace))
    return plans



def params_file(config: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write a ROS 2 parameter file (``--params-file``) for the resolved configuration."""
    path = Path(path)
    # '/**/name' matches the node in any namespace (namespace:=arm_0 puts it at /arm_0/name)
    path.write_text(yaml.safe_dump(
        {(node if node.startswith('/') else f'/**/{node}'): {'ros__parameters': params}
         for node, params in config.items()}, sort_keys=False))
    return path


def ros_args(node: NodePlan, params_path: str | os.PathLike) -> list[str]:
    """Command-line ``--ros-args`` that start ``node`` as its own process."""
    out = ['--ros-args', '-r', f'__node:={node.name}', '--params-file', str(params_path)]
    if node.namespace:
        out += ['-r', f'__ns:=/{node.namespace}']
    for src, dst in node.remappings:
        out += ['-r', f'{src}:={dst}']
    for key, value in node.overrides.items():
        out += ['-p', f'{key}:={str(value).lower() if isinstance(value, bool) else value}']
    return out


def to_dict(args: Args) -> dict[str, Any]:
    return asdict(args)


# ------------------------------------------------------------------------------ deployment
#: deploy.launch.py argument -> help text.
DEPLOY_ARG_HELP: dict[str, str] = {
    'task': 'touch | grasp_lift | push',
    'checkpoint': 'trained checkpoint.pt (required)',
    'driver': 'external: a real arm speaking the contract (remaps from '
              'config/external_driver.yaml) | pybullet: rehearse on the realtime sim bridge',
    'obs': 'policy observations: state | pixels (as trained)',
    'reset_mode': 'external driver: reset_node mode, scripted (home motion) | operator',
    'episodes': 'episodes to run, then hold (0 = until shutdown)',
    'rehearsal_latency_s': 'driver:=pybullet: injected command latency, s',
    'randomize': 'driver:=pybullet: domain randomisation in the bridge',
}


@dataclass(frozen=True)
class DeployArgs:
    """Arguments of ``deploy.launch.py`` (see ``DEPLOY_ARG_HELP``)."""

    task: str = 'touch'
    checkpoint: str = ''
    driver: str = 'external'
    obs: str = 'state'
    reset_mode: str = 'scripted'
    episodes: int = 0
    rehearsal_latency_s: float = 0.0
    randomize: bool = False

    def validate(self) -> DeployArgs:
        choices = {'task': tuple(TASK_CONFIGS), 'obs': OBS_KINDS, 'driver': DRIVERS,
                   'reset_mode': ('scripted', 'operator')}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f'{name}:={getattr(self, name)!r} is not valid; use one of '
                                  f'{list(allowed)}')
        if not self.checkpoint:
            raise ConfigError('checkpoint:=<run_dir>/checkpoint.pt is required to deploy')
        if self.driver == 'external' and (self.rehearsal_latency_s or self.randomize):
            raise ConfigError('rehearsal_latency_s / randomize act on the sim bridge only; use '
                              'driver:=pybullet to rehearse')
        return self


def deploy_args_from_strings(raw: dict[str, str]) -> DeployArgs:
    """``deploy.launch.py``'s arguments (strings) -> validated DeployArgs, the checkpoint file
    included, so that a bad argument starts no node at all."""
    def number(name: str, kind: type) -> Any:
        try:
            return kind(raw[name])
        except ValueError:
            what = 'an integer' if kind is int else 'a number'
            raise ConfigError(f'{name}:={raw[name]!r} is not {what}') from None

    args = DeployArgs(task=raw['task'], checkpoint=raw['checkpoint'], driver=raw['driver'],
                      obs=raw['obs'], reset_mode=raw['reset_mode'],
                      episodes=number('episodes', int),
                      rehearsal_latency_s=number('rehearsal_latency_s', float),
                      randomize=parse_bool('randomize', raw['randomize'])).validate()
    if not Path(args.checkpoint).is_file():
        raise ConfigError(f'checkpoint:={args.checkpoint!r} does not exist; pass the file a '
                          'training run wrote (<run_dir>/checkpoint.pt)')
    return args


def deploy_plan(args: DeployArgs, directory: Path | None = None) -> list[NodePlan]:
    """Nodes of a deployment: deploy_node (inference only, safety layer on) and either
    reset_node (driver:=external, hardware resets) or the realtime pybullet_bridge (rehearsal).
    Real time everywhere (no /clock); the policy's parameters come from config/<task>.yaml's
    policy_node block (network sizes must match the checkpoint's) with the deploy overrides."""
    args.validate()
    directory = directory or config_dir()
    task_cfg = _load_yaml(directory / TASK_CONFIGS[args.task])
    shared = {'task': args.task, 'use_sim_time': False}
    policy = {**task_cfg.get('/**', {}), **task_cfg.get('policy_node', {}), **shared,
              'checkpoint': args.checkpoint, 'obs': args.obs,
              'mode': 'realtime', 'deploy_episodes': int(args.episodes)}
    policy.pop('run_dir', None)
    remaps: list[tuple[str, str]] = []
    plans = []
    if args.driver == 'external':
        table = yaml.safe_load((directory / 'external_driver.yaml').read_text()) or {}
        remaps = [(str(k), str(v)) for k, v in (table.get('remappings') or {}).items()]
        plans.append(NodePlan('reset_node', 'selfalign_bringup', 'reset_node',
                              {'mode': args.reset_mode, 'use_sim_time': False}, list(remaps)))
    else:
        bridge = {**task_cfg.get('/**', {}), **task_cfg.get('pybullet_bridge', {}), **shared,
                  'mode': 'realtime', 'publish_camera': args.obs == 'pixels',
                  'rehearsal_latency_s': float(args.rehearsal_latency_s),
                  'randomize': bool(args.randomize)}
        bridge.pop('run_dir', None)
        plans.append(NodePlan('pybullet_bridge', 'selfalign_bringup', 'pybullet_bridge', bridge))
    plans.insert(0, NodePlan('deploy_node', 'selfalign_policy', 'deploy_node', policy,
                             list(remaps)))
    return plans
