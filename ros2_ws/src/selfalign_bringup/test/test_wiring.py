"""The run description shared by launch files, the embedded runner and the multi-process test."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from selfalign_bringup import wiring
from selfalign_bringup.wiring import Args, ConfigError


def test_shipped_configs_resolve_for_every_task_and_backend():
    for task in wiring.TASK_CONFIGS:
        for llm in ('scripted', 'openai'):
            config = wiring.resolve(Args(task=task, llm=llm, seed=7, run_dir='/tmp/r'))
            assert config['/**']['task'] == task and config['/**']['seed'] == 7
            assert config['llm_node']['backend'] == llm
            assert config['/**']['run_dir'] == '/tmp/r'
            assert config['llm_node']['transcript_path'] == '/tmp/r/transcript.jsonl'


def test_shipped_configs_train_as_the_paper_table_measured():
    """`make train` and the launch files use the learner and outer-loop settings whose results
    are in benchmarks/results/paper_table.json (experiment.ExperimentConfig's defaults): with the
    paper's 10k-step cadence a 100k push run would get 10 updates, not the ~50 measured."""
    from selfalign_bringup.experiment import ExperimentConfig
    exp = ExperimentConfig()
    for task in wiring.TASK_CONFIGS:
        config = wiring.resolve(Args(task=task, llm='scripted', seed=0, run_dir='/tmp/r'))
        align = config['alignment_node']
        for name in ('reward_update_every_steps', 'num_ranked', 'mh_samples', 'mh_burn_in',
                     'beta', 'agreement_threshold', 'success_threshold'):
            assert align[name] == getattr(exp, name), (task, name)


def test_launch_arguments_override_files_and_reach_nodes():
    args = Args(task='touch', llm='openai', model='my-model', base_url='http://127.0.0.1:9/v1',
                obs='pixels')
    nodes = {n.name: n for n in wiring.plan(args)}
    assert set(nodes) == set(wiring.NODES)
    assert nodes['llm_node'].parameters['model'] == 'my-model'
    assert nodes['llm_node'].parameters['base_url'] == 'http://127.0.0.1:9/v1'
    assert nodes['policy_node'].parameters['obs'] == 'pixels'
    assert nodes['pybullet_bridge'].parameters['publish_camera'] is True
    assert nodes['reward_node'].parameters['task'] == 'touch'  # /** folded into every node


def test_external_driver_drops_bridge_and_remaps_from_one_file():
    nodes = {n.name: n for n in wiring.plan(Args(driver='external'))}
    assert 'pybullet_bridge' not in nodes
    remaps = dict(nodes['policy_node'].remappings)
    table = yaml.safe_load((wiring.config_dir() / 'external_driver.yaml').read_text())
    assert remaps == {str(k): str(v) for k, v in table['remappings'].items()}
    assert nodes['reward_node'].remappings == []


@pytest.mark.parametrize('field,value,hint', [
    ('task', 'lift', 'grasp_lift'), ('llm', 'gpt', 'scripted'), ('obs', 'rgb', 'pixels'),
    ('driver', 'ur5', 'external'),
])
def test_bad_arguments_name_field_and_choices(field, value, hint):
    with pytest.raises(ConfigError, match=f'{field}:=.*{hint}'):
        Args(**{field: value}).validate()


def test_workers_start_one_bridge_per_arm_in_its_namespace_with_its_seed_and_one_clock(
        tmp_path):
    args = Args(task='touch', seed=5, workers=3, namespace='lab')
    config = wiring.resolve(args)
    plans = wiring.plan(args, config)
    bridges = [p for p in plans if p.name == 'pybullet_bridge']
    assert [b.namespace for b in bridges] == ['lab/arm_0', 'lab/arm_1', 'lab/arm_2']
    assert [b.parameters['seed'] for b in bridges] == [5, 6, 7]
    assert [b.parameters['publish_clock'] for b in bridges] == [True, False, False]
    nodes = {p.name: p for p in plans if p.name != 'pybullet_bridge'}
    assert nodes['policy_node'].parameters['workers'] == 3
    assert nodes['policy_node'].namespace == 'lab' and nodes['policy_node'].remappings == []
    assert ('ee_pose', 'arm_0/ee_pose') in nodes['monitor_node'].remappings
    # the multi-process route passes each bridge's own values on its command line
    cmd = wiring.ros_args(bridges[1], tmp_path / 'params.yaml')
    assert cmd[cmd.index('__ns:=/lab/arm_1') - 1] == '-r'
    assert 'seed:=6' in cmd and 'publish_clock:=false' in cmd
    # one worker: the single bridge at the run's own names, as before
    single = [p for p in wiring.plan(Args(task='touch')) if p.name == 'pybullet_bridge']
    assert len(single) == 1 and single[0].namespace == '' and single[0].overrides == {}


def test_bad_yaml_is_named(tmp_path):
    for name in ('push.yaml', 'llm.yaml'):
        (tmp_path / name).write_text('/**:\n  ros__parameters: {}\n')
    (tmp_path / 'push.yaml').write_text('policy_node: {ros__parameters: [1, 2\n')
    with pytest.raises(ConfigError, match='push.yaml: not valid YAML'):
        wiring.resolve(Args(), tmp_path)
    (tmp_path / 'push.yaml').write_text('polcy_node:\n  ros__parameters: {a: 1}\n')
    with pytest.raises(ConfigError, match="unknown node 'polcy_node'"):
        wiring.resolve(Args(), tmp_path)


def test_params_file_and_ros_args_roundtrip(tmp_path):
    args = Args(task='push', driver='external')
    config = wiring.resolve(args)
    path = wiring.params_file(config, tmp_path / 'params.yaml')
    loaded = yaml.safe_load(path.read_text())
    # '/**/llm_node' finds the node under any namespace (namespace:=arm_0)
    assert loaded['/**/llm_node']['ros__parameters']['backend'] == 'scripted'
    assert loaded['/**']['ros__parameters']['task'] == 'push'
    policy = next(n for n in wiring.plan(args, config) if n.name == 'policy_node')
    argv = wiring.ros_args(policy, path)
    assert argv[:4] == ['--ros-args', '-r', '__node:=policy_node', '--params-file']
    assert 'ee_wrench:=/force_torque_sensor_broadcaster/wrench' in argv
    assert not any(a.startswith('__ns:=') for a in argv)
    spaced = next(n for n in wiring.plan(Args(task='push', namespace='/arm_0/'), config)
                  if n.name == 'policy_node')
    assert '__ns:=/arm_0' in wiring.ros_args(spaced, path)
    with pytest.raises(ConfigError, match="namespace:='arm 0' is not a ROS namespace"):
        Args(namespace='arm 0').validate()


NEEDS_LAUNCH = pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                                  reason='launch_ros is not installed (pip-only set-up); '
                                  'runs on a Jazzy install (docker/)')


def _launched(file: str, overrides: dict[str, str]) -> dict[str, tuple]:
    """Evaluate a launch file as `ros2 launch` would up to starting processes: the declared
    arguments (with ``overrides``), the OpaqueFunction, each Node's substitutions. Returns
    {node name: (package, executable, parameters, remappings)}."""
    import importlib.machinery

    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    path = wiring.config_dir().parent / 'launch' / file
    module = importlib.machinery.SourceFileLoader(file.replace('.', '_'), str(path)).load_module()
    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update(overrides)
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    for arg in declared:
        arg.execute(context)  # sets the default where no override was given
    nodes = {}
    for entity in description.entities:
        if not isinstance(entity, OpaqueFunction):
            continue
        for action in entity.execute(context) or []:
            if not isinstance(action, Node):
                continue
            action._perform_substitutions(context)
            params = {}
            for arg, is_file in action._Node__expanded_parameter_arguments:
                if is_file:
                    for block in (yaml.safe_load(Path(arg).read_text()) or {}).values():
                        params.update(block.get('ros__parameters', {}))
            package = action.node_package
            package = package if isinstance(package, str) else ''.join(
                s.perform(context) for s in package)
            nodes[action.node_name.lstrip('/')] = (
                package, action.node_executable, params,
                sorted(action.expanded_remapping_rules or []))
    return {'_declared': {a.name for a in declared}, **nodes}


@NEEDS_LAUNCH
@pytest.mark.parametrize('file, task', [('touch.launch.py', 'touch'),
                                        ('grasp.launch.py', 'grasp_lift'),
                                        ('push.launch.py', 'push')])
@pytest.mark.parametrize('driver', ['pybullet', 'external'])
def test_task_launch_files_start_the_planned_nodes_with_their_parameters(file, task, driver,
                                                                          tmp_path):
    got = _launched(file, {'run_dir': str(tmp_path), 'driver': driver, 'seed': '3'})
    assert {'llm', 'model', 'base_url', 'obs', 'driver', 'rviz', 'seed'} <= got.pop('_declared')
    args = Args(task=task, driver=driver, seed=3, run_dir=str(tmp_path))
    want = {n.name: (n.package, n.executable, json.loads(json.dumps(n.parameters)),
                     sorted(n.remappings)) for n in wiring.plan(args)}
    assert set(got) == set(want)
    for name, (package, executable, params, remaps) in want.items():
        g = got[name]
        assert g[:2] == (package, executable), name
        assert {k: g[2].get(k) for k in params} == params, name  # every planned parameter
        assert g[3] == remaps, name
    assert (tmp_path / 'config.yaml').is_file()


@NEEDS_LAUNCH
@pytest.mark.parametrize('driver', ['external', 'pybullet'])
def test_deploy_launch_file_starts_the_planned_nodes_with_their_parameters(driver, tmp_path):
    ckpt = tmp_path / 'checkpoint.pt'
    ckpt.write_bytes(b'x')  # only its existence is checked before anything starts
    raw = {'checkpoint': str(ckpt), 'driver': driver}
    got = _launched('deploy.launch.py', raw)
    got.pop('_declared')
    defaults = {f.name: str(getattr(wiring.DeployArgs(), f.name)).lower()
                if isinstance(getattr(wiring.DeployArgs(), f.name), bool)
                else str(getattr(wiring.DeployArgs(), f.name))
                for f in dataclasses.fields(wiring.DeployArgs)}
    want = {n.name: (n.package, n.executable, json.loads(json.dumps(n.parameters)),
                     sorted(n.remappings))
            for n in wiring.deploy_plan(wiring.deploy_args_from_strings({**defaults, **raw}))}
    assert set(got) == set(want)
    for name, (package, executable, params, remaps) in want.items():
        assert got[name][:2] == (package, executable), name
        assert {k: got[name][2].get(k) for k in params} == params, name
        assert got[name][3] == remaps, name
    assert got['deploy_node'][1] == 'deploy_node' and 'checkpoint' in got['deploy_node'][2]


@pytest.mark.parametrize('raw, words', [
    ({'seed': 'abc'}, "seed:='abc' is not an integer"),
    ({'use_sim_time': 'maybe'}, "use_sim_time:='maybe' is not a boolean"),
    ({'obs': 'depth'}, "obs:='depth' is not valid"),
    ({'workers': 'two'}, "workers:='two' is not an integer"),
    ({'workers': '0'}, 'workers:=0 is out of range'),
])
def test_launch_argument_strings_are_checked_by_name(raw, words):
    with pytest.raises(ConfigError, match=words):
        wiring.args_from_strings('push', raw)
    args = wiring.args_from_strings('push', {'seed': '7', 'use_sim_time': 'False'})
    assert args.seed == 7 and args.use_sim_time is False


def test_deploy_arguments_check_the_checkpoint_before_anything_starts(tmp_path):
    raw = {'task': 'touch', 'checkpoint': str(tmp_path / 'missing.pt'), 'driver': 'external',
           'obs': 'state', 'reset_mode': 'scripted', 'episodes': '0',
           'rehearsal_latency_s': '0.0', 'randomize': 'false'}
    with pytest.raises(ConfigError, match='missing.pt.*does not exist'):
        wiring.deploy_args_from_strings(raw)
    with pytest.raises(ConfigError, match="episodes:='two' is not an integer"):
        wiring.deploy_args_from_strings({**raw, 'episodes': 'two'})
    (tmp_path / 'missing.pt').write_bytes(b'x')
    assert wiring.deploy_args_from_strings(raw).episodes == 0
