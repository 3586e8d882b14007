"""The run description shared by launch files, the embedded runner and the multi-process test."""

import importlib.util

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
    assert loaded['llm_node']['ros__parameters']['backend'] == 'scripted'
    policy = next(n for n in wiring.plan(args, config) if n.name == 'policy_node')
    argv = wiring.ros_args(policy, path)
    assert argv[:4] == ['--ros-args', '-r', '__node:=policy_node', '--params-file']
    assert '/ee_wrench:=/force_torque_sensor_broadcaster/wrench' in argv


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installed (pip-only set-up); checked on Jazzy')
def test_launch_files_build_a_description():
    import importlib.machinery
    for name in ('touch', 'grasp', 'push'):
        path = wiring.config_dir().parent / 'launch' / f'{name}.launch.py'
        module = importlib.machinery.SourceFileLoader(name, str(path)).load_module()
        description = module.generate_launch_description()
        names = [a.name for a in description.entities if hasattr(a, 'name')]
        assert {'llm', 'model', 'base_url', 'obs', 'driver', 'rviz', 'seed'} <= set(names)


@pytest.mark.parametrize('raw, words', [
    ({'seed': 'abc'}, "seed:='abc' is not an integer"),
    ({'use_sim_time': 'maybe'}, "use_sim_time:='maybe' is not a boolean"),
    ({'obs': 'depth'}, "obs:='depth' is not valid"),
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
