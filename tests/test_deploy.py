"""Deployment on the contract: deploy_node against the realtime bridge, and reset_node.

Real processes over DDS: the pybullet_bridge in realtime mode (the hardware timing), deploy_node
(timer-driven, latest observations, safety layer), reset_node. Checks the
issue-7 deployment guarantees: a deployment never explores (episode actions == the checkpoint's
deterministic actor on the recorded observations), the e-stop stops commands within one control
period and latches until released, stale observations stop the arm.
"""

import os
import signal
import time

from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
import pytest
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from selfalign_core import contract_msgs as cm
from selfalign_core import features as F
from selfalign_interfaces.msg import Episode
from selfalign_interfaces.srv import ResetEpisode
from selfalign_policy.config import DrQV2Config
from selfalign_policy.safety import DeployedPolicy
from selfalign_policy.trainer import Trainer
from selfalign_reward.msgs import episode_from_msg
from tests.rosproc import NodeProcess, TestNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RATE_HZ = 20.0
PERIOD_NS = int(1e9 / RATE_HZ)
TWIST = '/servo_node/delta_twist_cmds'


class _StateEnv:
    """Random observations: enough to give the actor non-trivial weights quickly."""

    def __init__(self):
        from gymnasium import spaces
        self.observation_space = spaces.Box(-np.inf, np.inf, (F.OBS_DIM,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._rng = np.random.default_rng(0)
        self._t = 0

    def reset(self, seed=None, options=None):
        self._t = 0
        return self._rng.normal(size=F.OBS_DIM).astype(np.float32), {}

    def step(self, action):
        self._t += 1
        obs = self._rng.normal(size=F.OBS_DIM).astype(np.float32)
        return obs, 0.0, False, self._t >= 8, {'features': np.zeros(F.FEATURE_DIM, np.float32)}


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    import torch
    torch.set_num_threads(1)
    cfg = DrQV2Config.from_dict({'agent': {'hidden_dim': 16, 'batch_size': 8,
                                           'num_expl_steps': 4, 'feature_dim': 8},
                                 'replay': {'capacity': 64},
                                 'trainer': {'progress': False, 'eval_every_steps': 0}})
    trainer = Trainer(_StateEnv(), cfg, lambda x: np.zeros(len(x), np.float32))
    trainer.train(24)
    return str(trainer.save(tmp_path_factory.mktemp('deploy') / 'checkpoint.pt'))


def _twists_after(probe, t_ns):
    return [m for m in probe.messages(TWIST) if cm.stamp_ns(m.header.stamp) > t_ns]


def _speed(m):
    return float(np.linalg.norm(cm.twist_linear(m)))


def _fail(what, *procs):
    return AssertionError(what + '\n' + '\n----\n'.join(p.output()[-3000:] for p in procs))


def test_deploy_is_deterministic_estop_latches_and_stale_state_stops_the_arm(checkpoint):
    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge',
                         params={'mode': 'realtime', 'control_rate_hz': RATE_HZ,
                                 'command_timeout_s': 0.5})
    policy = NodeProcess('selfalign_policy', 'deploy_node',
                         params={'checkpoint': checkpoint, 'hidden_dim': 16,
                                 'control_rate_hz': RATE_HZ, 'observation_timeout_s': 0.2,
                                 'deploy_stop_on_success': False})
    with TestNode('deploy_probe') as probe:
        probe.record(Episode, '/selfalign/episode', 10)
        probe.record(TwistStamped, TWIST, 100)
        probe.record(String, '/selfalign/policy_stats', 100)
        estop = probe.publisher(Bool, '/selfalign/estop')
        try:
            bridge.start()
            policy.start()
            try:
                probe.wait_until(lambda: probe.messages('/selfalign/episode'), 60, 'an episode')
            except TimeoutError:
                raise _fail('no deploy episode', bridge, policy) from None
            # 1. never explores: every action is the actor mean on the observation it had
            ep = episode_from_msg(probe.messages('/selfalign/episode')[0])
            assert ep.evaluation and ep.features.shape == (100, F.FEATURE_DIM)
            obs = F.observation_vector(F.unpack(ep.features[:-1]))
            ref = DeployedPolicy(checkpoint)
            expect = np.stack([ref.act(o) for o in obs])
            np.testing.assert_array_equal(ep.actions[1:], expect)
            assert np.ptp(ep.actions[:, :3], axis=0).max() > 1e-3  # it does act
            moving = [m for m in probe.messages(TWIST) if _speed(m) > 0]
            assert moving and max(_speed(m) for m in moving) <= 0.3 + 1e-9

            # 2. e-stop: zero commands within one control period, latched
            t_e = time.time_ns()
            estop.publish(Bool(data=True))
            time.sleep(0.6)
            after = _twists_after(probe, t_e + PERIOD_NS)
            assert len(after) >= 5, policy.output()[-2000:]
            assert all(_speed(m) == 0.0 for m in after)
            first_zero = min(cm.stamp_ns(m.header.stamp) for m in _twists_after(probe, t_e)
                             if _speed(m) == 0.0)
            assert first_zero - t_e < PERIOD_NS
            reply = probe.call(Trigger, '/selfalign/estop_release', Trigger.Request())
            assert not reply.success and 'still true' in reply.message
            time.sleep(0.3)
            assert all(_speed(m) == 0.0 for m in _twists_after(probe, t_e + PERIOD_NS))
            estop.publish(Bool(data=False))
            time.sleep(0.2)
            assert probe.call(Trigger, '/selfalign/estop_release', Trigger.Request()).success
            t_r = time.time_ns()
            probe.wait_until(lambda: any(_speed(m) > 0 for m in _twists_after(probe, t_r)), 10,
                             'commands again after the release')

            # 3. watchdog: a frozen driver -> zero twists once observations are stale
            os.killpg(bridge.pid, signal.SIGSTOP)
            t_s = time.time_ns()
            try:
                time.sleep(1.0)
                late = _twists_after(probe, t_s + int(0.2e9) + 2 * PERIOD_NS)
            finally:
                os.killpg(bridge.pid, signal.SIGCONT)
            assert len(late) >= 5 and all(_speed(m) == 0.0 for m in late)
            probe.wait_until(lambda: 'observations stale' in policy.output(), 5, 'a warning')
            t_c = time.time_ns()
            probe.wait_until(lambda: any(_speed(m) > 0 for m in _twists_after(probe, t_c)), 10,
                             'commands again once the driver is back')
            assert policy.alive() and bridge.alive()
        finally:
            policy.stop()
            bridge.stop()


def test_reset_node_drives_home_through_the_contract_and_waits_for_an_operator():
    # The bridge's own reset service moves aside: on hardware reset_node serves it.
    remap = {'/selfalign/reset_episode': '/sim/reset_episode'}
    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge',
                         params={'mode': 'realtime', 'command_timeout_s': 0.5}, remaps=remap)
    reset = NodeProcess('selfalign_bringup', 'reset_node',
                        params={'mode': 'scripted', 'home_m': [0.45, 0.0, 0.2],
                                'max_speed_mps': 0.2, 'settle_s': 0.2, 'timeout_s': 20.0})
    with TestNode('reset_probe') as probe:
        probe.record(PoseStamped, '/ee_pose', 10)
        twist = probe.publisher(TwistStamped, TWIST)
        try:
            bridge.start()
            reset.start()
            probe.wait_until(lambda: probe.messages('/ee_pose'), 30, 'the bridge')
            for _ in range(12):  # move the EE ~10 cm away
                twist.publish(cm.twist_msg(np.array([0.15, 0.15, -0.05]), time.time_ns()))
                time.sleep(0.1)
            twist.publish(cm.twist_msg(np.zeros(3), time.time_ns()))
            away, _ = cm.pose_arrays(probe.messages('/ee_pose')[-1])
            assert np.linalg.norm(away - [0.45, 0.0, 0.2]) > 0.05
            reply = probe.call(ResetEpisode, '/selfalign/reset_episode',
                               ResetEpisode.Request(seed=3), timeout_s=30)
            assert reply.success, reply.message + reset.output()[-2000:]
            pos, _ = cm.pose_arrays(reply.ee_pose)
            assert np.linalg.norm(pos - [0.45, 0.0, 0.2]) < 0.01
            assert reply.seed == 3 and reply.block_rest_z == pytest.approx(0.025, abs=0.005)
            assert len(reply.joint_state.name) == 9
        finally:
            reset.stop()
        operator = NodeProcess('selfalign_bringup', 'reset_node',
                               params={'mode': 'operator', 'settle_s': 0.0, 'timeout_s': 20.0})
        try:
            operator.start()
            client = probe.node.create_client(ResetEpisode, '/selfalign/reset_episode')
            assert client.wait_for_service(timeout_sec=20)
            future = client.call_async(ResetEpisode.Request(seed=-1))
            time.sleep(1.5)
            assert not future.done()  # waits for the operator
            assert probe.call(Trigger, '/reset_node/confirm', Trigger.Request()).success
            probe.wait_until(future.done, 10, 'the reset reply after confirmation')
            assert future.result().success and future.result().seed == 0
        finally:
            operator.stop()
            bridge.stop()


def test_deploy_plan_external_driver_and_rehearsal(tmp_path):
    from selfalign_bringup.wiring import ConfigError, deploy_plan, DeployArgs

    ext = deploy_plan(DeployArgs(checkpoint='/x/checkpoint.pt', reset_mode='operator'))
    assert [p.name for p in ext] == ['deploy_node', 'reset_node']
    assert ext[0].executable == 'deploy_node'
    pol = ext[0].parameters
    assert pol['checkpoint'] == '/x/checkpoint.pt'
    assert pol['use_sim_time'] is False and 'run_dir' not in pol
    assert ('object_pose', '/object_tracker/pose') in ext[0].remappings
    assert ext[1].parameters['mode'] == 'operator'
    sim = deploy_plan(DeployArgs(checkpoint='c.pt', driver='pybullet',
                                 rehearsal_latency_s=0.05, randomize=True))
    assert [p.name for p in sim] == ['deploy_node', 'pybullet_bridge']
    assert sim[1].parameters['mode'] == 'realtime' and sim[1].parameters['randomize'] is True
    assert sim[1].parameters['rehearsal_latency_s'] == 0.05 and not sim[0].remappings
    with pytest.raises(ConfigError, match='checkpoint'):
        deploy_plan(DeployArgs())
    with pytest.raises(ConfigError, match='driver:=pybullet'):
        deploy_plan(DeployArgs(checkpoint='c.pt', rehearsal_latency_s=0.05))
