"""policy_node as a real process against the real pybullet_bridge process over DDS."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from geometry_msgs.msg import TwistStamped
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from selfalign_interfaces.msg import Episode, RewardSpec
from selfalign_reward.evaluate import RewardFunction
from selfalign_reward.msgs import episode_from_msg, spec_to_msg
from selfalign_reward.template import load_reference_template

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from tests.rosproc import NodeProcess, TestNode  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # ~15 s: two bridge starts, 400 steps

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# the bridge logs (debug) when it publishes an episode's first state
BRIDGE_DEBUG = ['--ros-args', '--log-level', 'pybullet_bridge:=debug']
PARAMS = {'task': 'touch', 'total_env_steps': 400, 'num_expl_steps': 100, 'batch_size': 16,
          'hidden_dim': 32, 'eval_every_steps': 0, 'stats_every_updates': 10,
          'checkpoint_every_steps': 200, 'state_timeout_s': 0.5}


def _fail(probe_what: str, *procs: NodeProcess) -> AssertionError:
    return AssertionError(probe_what + '\n' + '\n----\n'.join(p.output()[-3000:] for p in procs))


def test_trains_on_the_latched_spec_publishes_episodes_and_survives_a_silent_driver(tmp_path):
    template = load_reference_template('touch')
    theta = {**template.initial_theta(), 'force_threshold': 0.2}
    spec = spec_to_msg(template, theta, version=7, source='test', task='touch')
    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge', params={'mode': 'lockstep'})
    policy = NodeProcess('selfalign_policy', 'policy_node',
                         params={**PARAMS, 'run_dir': str(tmp_path)})
    with TestNode('policy_probe') as probe:
        pub = probe.node.create_publisher(RewardSpec, '/selfalign/reward_spec', LATCHED)
        pub.publish(spec)
        probe.record(Episode, '/selfalign/episode', 50)
        probe.record(String, '/selfalign/policy_stats', 100)
        # the commands' stamps (the policy's clock: wall time, ns); the probe has long matched
        # the policy's publisher, so none is missed (a new bridge's topics it might not see yet)
        twists: list[int] = [0]
        probe.node.create_subscription(
            TwistStamped, '/servo_node/delta_twist_cmds',
            lambda m: twists.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec), 10)
        try:
            bridge.start()
            policy.start()
            try:
                probe.wait_until(lambda: len(probe.messages('/selfalign/episode')) >= 2, 60,
                                 'two Episode messages')
            except TimeoutError:
                raise _fail('no episodes', bridge, policy) from None
            ep = episode_from_msg(probe.messages('/selfalign/episode')[0])
            assert ep.task == 'touch' and ep.features.shape[0] == 100
            assert ep.reward_version == 7 and not ep.evaluation
            expect = RewardFunction(template).total(ep.features, theta)
            assert np.allclose(ep.rewards, expect, atol=1e-5)  # trained on the spec's reward
            assert np.all(np.abs(ep.actions) <= 1.0)
            # the driver dies mid-episode: the episode is aborted, the node stays up, says why
            probe.wait_until(lambda: len(twists) % 100 > 30, 30, 'a command mid-episode')
            bridge.stop()
            n_before = len(probe.messages('/selfalign/episode'))
            try:
                probe.wait_until(lambda: 'training paused' in policy.output(), 20,
                                 'the paused warning')
            except TimeoutError:
                raise _fail('no pause warning', policy) from None
            assert policy.alive()
            # ... and continues with a reset as soon as a new driver serves (its clock restarts)
            bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge',
                                 params={'mode': 'lockstep'}, extra_args=BRIDGE_DEBUG)
            bridge.start()
            try:
                first_ns = int(bridge.log_time('first state of episode', 30) * 1e9)
                probe.wait_until(lambda: twists[-1] > first_ns, 30, 'a command to the new driver')
                resumed = next(t for t in twists if t > first_ns)
                print(f'training resumed {(resumed - first_ns) * 1e-9:.3f} s after the restarted '
                      "driver's first state")
                probe.wait_until(
                    lambda: any(json.loads(m.data).get('kind') == 'done'
                                for m in probe.messages('/selfalign/policy_stats')),
                    60, 'training done')
            except TimeoutError:
                raise _fail('training did not resume and finish', bridge, policy) from None
            assert len(probe.messages('/selfalign/episode')) > n_before
            stats = [json.loads(m.data) for m in probe.messages('/selfalign/policy_stats')]
            updates = [s for s in stats if s['kind'] == 'update']
            assert updates and all(np.isfinite(s['critic_loss']) for s in updates)
            assert (tmp_path / 'checkpoint.pt').is_file()
        finally:
            policy.stop()
            bridge.stop()


def test_an_unreadable_checkpoint_ends_the_node_non_zero_and_is_left_alone(tmp_path):
    ckpt = tmp_path / 'checkpoint.pt'
    ckpt.write_bytes(b'PK\x03\x04' + bytes(200))  # a zip cut off after its first header
    before = ckpt.read_bytes()
    policy = NodeProcess('selfalign_policy', 'policy_node',
                         params={**PARAMS, 'reward_source': 'oracle', 'run_dir': str(tmp_path),
                                 'resume': True})
    with policy:
        try:
            code = policy.wait(60)  # exits by itself: no driver, no signal needed
        except subprocess.TimeoutExpired:
            raise _fail('policy_node kept running after an unreadable checkpoint',
                        policy) from None
        out = policy.output()
    assert code == 1, out[-3000:]
    assert 'cannot be read' in out and str(ckpt) in out, out[-3000:]
    assert ckpt.read_bytes() == before  # nothing written over it (no 'checkpoint at step 0')
    assert not (tmp_path / 'checkpoint.pt.tmp').exists()


def test_repeated_sigint_and_sigterm_still_finish_the_checkpoint(tmp_path):
    """What `timeout -s INT ros2 launch` or a process-group Ctrl-C delivers: more signals while
    the node writes its checkpoint (a large replay makes that write take a while)."""
    from selfalign_policy.checkpoint import load_checkpoint

    policy = NodeProcess('selfalign_policy', 'policy_node',
                         params={**PARAMS, 'reward_source': 'oracle', 'run_dir': str(tmp_path),
                                 'replay_capacity': 1_500_000})
    with policy:
        try:
            policy.log_time('MiB preallocated', 60)  # the trainer exists (it waits for a driver)
        except TimeoutError as exc:
            raise _fail(str(exc), policy) from None
        for sig, pause in ((signal.SIGINT, 0.3), (signal.SIGINT, 0.3), (signal.SIGTERM, 0.0)):
            os.kill(policy.pid, sig)
            time.sleep(pause)
        try:
            policy.wait(60)
        except subprocess.TimeoutExpired:
            raise _fail('policy_node did not exit', policy) from None
        out = policy.output()
    assert (tmp_path / 'checkpoint.pt').is_file(), out[-3000:]
    assert not (tmp_path / 'checkpoint.pt.tmp').exists(), out[-3000:]
    state = load_checkpoint(tmp_path / 'checkpoint.pt', restore_rng=False)
    assert state['counters']['env_step'] == 0


def test_a_reward_that_breaks_its_bounds_on_real_data_is_dropped_and_training_goes_on(tmp_path):
    """Reward code is metered in the node's process: a spec whose θ takes an expensive branch
    (here: 100 full-size array doublings, over the evaluation budget) raises instead of running
    away; the node goes back to the previous reward and keeps training."""
    from selfalign_reward.template import parse_template

    good = load_reference_template('touch')
    header = good.code.split('def reward')[0]
    bad = parse_template(header + "def reward(f, p):\n    a = f['ee_pos'] + 0.0\n"
                         "    if p['w_reach'] > 5.0:\n" + '        a = a + a\n' * 100
                         + '    total = np.sum(a, axis=-1)\n    return total, {}\n')
    bad_theta = {**bad.initial_theta(), 'w_reach': 6.0}
    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge', params={'mode': 'lockstep'})
    policy = NodeProcess('selfalign_policy', 'policy_node',
                         params={**PARAMS, 'total_env_steps': 600, 'run_dir': str(tmp_path)})
    with TestNode('fallback_probe') as probe:
        pub = probe.node.create_publisher(RewardSpec, '/selfalign/reward_spec', LATCHED)
        pub.publish(spec_to_msg(good, good.initial_theta(), version=7, source='good',
                                task='touch'))
        probe.record(Episode, '/selfalign/episode', 50)
        probe.record(String, '/selfalign/policy_stats', 100)
        try:
            bridge.start()
            policy.start()
            probe.wait_until(lambda: len(probe.messages('/selfalign/episode')) >= 2, 60,
                             'two episodes on the good reward')
            pub.publish(spec_to_msg(bad, bad_theta, version=8, source='bad', task='touch'))
            probe.wait_until(lambda: 'reward version 8 failed on real data' in policy.output(),
                             30, 'the failure of the bad reward')
            probe.wait_until(
                lambda: any(json.loads(m.data).get('kind') == 'done'
                            for m in probe.messages('/selfalign/policy_stats')),
                90, 'training done')
        except TimeoutError as exc:
            raise _fail(str(exc), bridge, policy) from None
        finally:
            policy.stop()
            bridge.stop()
    out = policy.output()
    assert 'array elements in one evaluation' in out and 'back to reward version 7' in out
    versions = [m.reward_version for m in probe.messages('/selfalign/episode')]
    assert versions[-1] == 7, versions  # the last episodes trained on the previous reward
    assert 'Traceback' not in out


def test_pixel_policy_trains_over_ros_with_key_frames_checkpoints_and_resumes(tmp_path):
    """obs:=pixels against the real bridge in lockstep: camera frames arrive with every state,
    stack, train; key frames ride on the Episode messages; the replay is sized from its memory
    budget; a checkpoint is written and the next start resumes from it."""
    from selfalign_core import contract_msgs as cm
    from selfalign_policy.replay import capacity_for_memory

    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge', params={
        'mode': 'lockstep', 'publish_camera': True, 'key_frame_every_steps': 25})
    params = {**PARAMS, 'obs': 'pixels', 'total_env_steps': 200, 'num_expl_steps': 50,
              'batch_size': 8, 'checkpoint_every_steps': 100, 'key_frames': 3,
              'replay_memory_mb': 64, 'run_dir': str(tmp_path), 'reward_source': 'oracle',
              'state_timeout_s': 5.0}
    policy = NodeProcess('selfalign_policy', 'policy_node', params=params)

    def done(probe):
        return any(json.loads(m.data).get('kind') == 'done'
                   for m in probe.messages('/selfalign/policy_stats'))

    with TestNode('pixel_probe') as probe:
        probe.record(Episode, '/selfalign/episode', 50)
        probe.record(String, '/selfalign/policy_stats', 200)
        try:
            bridge.start()
            policy.start()
            probe.wait_until(lambda: done(probe), 240, 'pixel training done')
        except TimeoutError as exc:
            policy.stop()
            bridge.stop()
            raise _fail(str(exc), bridge, policy) from None
        policy.stop()
        out = policy.output()
        stats = [json.loads(m.data) for m in probe.messages('/selfalign/policy_stats')]
        finished = next(s for s in stats if s['kind'] == 'done')
        assert finished['env_step'] == 200 and finished['aborted_episodes'] == 0, out[-2000:]
        assert any(s['kind'] == 'update' for s in stats)  # it trained on stacked frames
        slots = capacity_for_memory(64, (3, 84, 84), 4)
        assert f'replay: {slots} transitions' in out and 'from replay_memory_mb' in out
        episode = probe.messages('/selfalign/episode')[0]
        assert list(episode.key_frame_steps) == [0, 50, 100]  # 3 of the 5 published
        frame = cm.compressed_array(episode.key_frames[1])
        assert frame.shape == (240, 320, 3) and frame.std() > 5  # a real view, not blank
        assert (tmp_path / 'checkpoint.pt').is_file()

        # resume: the next start continues from the checkpoint's 200 steps to 300
        resumed = NodeProcess('selfalign_policy', 'policy_node',
                              params={**params, 'total_env_steps': 300, 'resume': True})
        n_done = sum(json.loads(m.data).get('kind') == 'done'
                     for m in probe.messages('/selfalign/policy_stats'))
        try:
            resumed.start()
            probe.wait_until(lambda: sum(json.loads(m.data).get('kind') == 'done' for m in
                                         probe.messages('/selfalign/policy_stats')) > n_done,
                             240, 'resumed training done')
        except TimeoutError as exc:
            raise _fail(str(exc), bridge, resumed) from None
        finally:
            resumed.stop()
            bridge.stop()
        assert 'resumed from' in resumed.output() and 'at env step 200' in resumed.output()
        last = [json.loads(m.data) for m in probe.messages('/selfalign/policy_stats')][-1]
        assert last['kind'] == 'done' and last['env_step'] == 300


@pytest.mark.parametrize('budget, words', [(1, 'fewer than two episodes'),
                                           (10**7 - 1, 'of memory are available')])
def test_a_replay_budget_that_cannot_fit_is_refused_naming_the_parameter(budget, words):
    with NodeProcess('selfalign_policy', 'policy_node',
                     params={**PARAMS, 'obs': 'pixels', 'replay_memory_mb': budget}) as policy:
        code = policy.wait(60)
        out = policy.output()
    assert code == 2, out[-2000:]
    assert 'replay_memory_mb' in out and words in out and 'Traceback' not in out


@pytest.mark.ros
def test_the_target_critic_rate_is_a_parameter_the_learner_gets(tmp_path):
    """critic_target_tau (docs/tasks.md: 0.005 learned the oracle push on 3 of 3 seeds) goes
    from the node's parameters into the agent's soft target update."""
    import rclpy
    from rclpy.parameter import Parameter

    from selfalign_policy.policy_node import PolicyNode

    rclpy.init()
    try:
        default = PolicyNode()
        tuned = PolicyNode(parameter_overrides=[Parameter('critic_target_tau', value=0.005)])
        try:
            assert default.cfg.agent.critic_target_tau == 0.01
            assert tuned.cfg.agent.critic_target_tau == 0.005
        finally:
            for node in (default, tuned):
                node.close()
                node.destroy_node()
    finally:
        rclpy.try_shutdown()
