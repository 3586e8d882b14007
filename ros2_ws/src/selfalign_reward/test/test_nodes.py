"""Process tests: reward_node and alignment_node as real executables over real DDS."""

from pathlib import Path
import sys

import numpy as np
import pytest
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from selfalign_core import tasks
from selfalign_interfaces.msg import AlignmentReport, Episode, RewardSpec
from selfalign_interfaces.srv import RankTrajectories, SetRewardParams
from selfalign_reward.msgs import episode_from_msg, episode_to_msg, spec_to_msg
from selfalign_reward.reward_node import LATCHED
from selfalign_reward.synthetic import synthetic_episode
from selfalign_reward.template import load_reference_template
from tests.rosproc import NodeProcess, TestNode

pytestmark = pytest.mark.ros


def latest_spec(probe, after_version=-1, timeout_s=20.0):
    probe.wait_until(lambda: any(m.version > after_version
                                 for m in probe.messages('/selfalign/reward_spec')),
                     timeout_s, f'a RewardSpec with version > {after_version}')
    return probe.messages('/selfalign/reward_spec')[-1]


def test_reward_node_latched_spec_and_set_params():
    with NodeProcess('selfalign_reward', 'reward_node', params={'task': 'touch'}) as proc:
        with TestNode('reward_probe') as probe:
            probe.record(RewardSpec, '/selfalign/reward_spec', LATCHED)
            try:
                spec = latest_spec(probe)
            except TimeoutError:
                raise AssertionError(proc.output()) from None
            assert spec.version == 0 and spec.source == 'template:touch'
            assert dict(zip(spec.param_names, spec.param_values))['force_threshold'] == 1.0

            bad = probe.call(SetRewardParams, '/selfalign/set_reward_params',
                             SetRewardParams.Request(param_names=['force_threshold'],
                                                     param_values=[190.0]))
            assert not bad.success and '[0.01, 100.0]' in bad.message and bad.version == 0
            unknown = probe.call(SetRewardParams, '/selfalign/set_reward_params',
                                 SetRewardParams.Request(param_names=['w_push'],
                                                         param_values=[1.0]))
            assert not unknown.success and 'w_push' in unknown.message

            good = probe.call(SetRewardParams, '/selfalign/set_reward_params',
                              SetRewardParams.Request(param_names=['force_threshold'],
                                                      param_values=[0.13], reason='test'))
            assert good.success and good.version == 1
            spec = latest_spec(probe, 0)
            assert dict(zip(spec.param_names, spec.param_values))['force_threshold'] == 0.13

            # A broken proposal leaves the last good reward; a valid one replaces it.
            pub = probe.publisher(RewardSpec, '/selfalign/reward_proposal')
            probe.wait_until(lambda: pub.get_subscription_count() > 0, 10, 'proposal sub')
            broken = RewardSpec(code='import os\n', source='llm:broken')
            pub.publish(broken)
            pub.publish(spec_to_msg(load_reference_template('push'), source='llm:push'))
            spec = latest_spec(probe, 1)
            assert spec.version == 2 and spec.source == 'llm:push'
            assert 'w_push' in spec.param_names
            assert 'proposal rejected' in proc.output()


@pytest.mark.slow
def test_alignment_node_updates_push_weight_through_ranking_service():
    """Push episodes + a ground-truth ranking service -> MH raises w_push on reward_node."""
    rng = np.random.default_rng(0)

    def rank(request, response):
        eps = [episode_from_msg(m) for m in request.episodes]
        prog = np.array([tasks.progress('push', e.feature_dict()) for e in eps])
        response.ranks = (rankdata(-prog, method='dense') - 1).astype(int).tolist()
        response.success = True
        response.model = 'ground-truth test ranker'
        return response

    params = {'task': 'push', 'reward_update_every_steps': 1000, 'num_ranked': 8,
              'mh_samples': 1500, 'mh_burn_in': 500, 'seed': 1, 'llm_call_deadline_s': 20.0}
    with NodeProcess('selfalign_reward', 'reward_node', params={'task': 'push'}) as rproc, \
            NodeProcess('selfalign_reward', 'alignment_node', params=params) as aproc, \
            TestNode('alignment_probe') as probe:
        probe.node.create_service(RankTrajectories, '/selfalign/rank_trajectories', rank)
        probe.record(RewardSpec, '/selfalign/reward_spec', LATCHED)
        probe.record(AlignmentReport, '/selfalign/alignment_report')
        latest_spec(probe)
        pub = probe.publisher(Episode, '/selfalign/episode', 50)
        probe.wait_until(lambda: pub.get_subscription_count() > 0, 20, 'episode subscriber')
        for i in range(12):
            if i % 2 == 0:
                e = synthetic_episode('push', reach_step=int(rng.integers(5, 15)), force_n=0.5,
                                      rng=rng)
            else:
                e = synthetic_episode('push', reach_step=int(rng.integers(15, 30)), force_n=0.5,
                                      push_fraction=float(rng.uniform(0.3, 1.0)), rng=rng)
            e.episode_index, e.env_step = i, 100 * (i + 1)
            pub.publish(episode_to_msg(e))
        try:
            probe.wait_until(lambda: probe.messages('/selfalign/alignment_report'), 60,
                             'an AlignmentReport')
        except TimeoutError:
            raise AssertionError(aproc.output() + rproc.output()) from None
        report = probe.messages('/selfalign/alignment_report')[0]
        assert report.status == 'updated', report.status
        # The spec may reach alignment_node after some episodes: the update starts then.
        assert report.num_episodes == 8 and report.env_step >= 1000
        after = dict(zip(report.param_names, report.theta_after))
        assert report.theta_before[0] == 2.0 and after['w_push'] > 5.0
        assert report.kendall_tau_after > report.kendall_tau_before
        spec = latest_spec(probe, 0)
        assert spec.version == report.reward_version == 1
        assert dict(zip(spec.param_names, spec.param_values))['w_push'] == \
            pytest.approx(after['w_push'])
