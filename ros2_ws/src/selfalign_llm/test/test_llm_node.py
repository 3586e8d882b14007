"""llm_node as a real process: services over DDS, the openai backend over real HTTP to a local
scripted server, the scripted teacher, failures as success=false, responsiveness while a call
hangs, the usage topic, and no key in the transcript or the node's output."""

import json
import os

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from selfalign_interfaces.srv import AnalyzeFailure, ProposeReward, RankTrajectories
from selfalign_llm.backends.scripted import proposal_reply
from selfalign_llm.transcript import read_transcript
from selfalign_reward.msgs import episode_to_msg, spec_to_msg
from selfalign_reward.template import load_reference_template
from tests.fake_openai_server import FakeOpenAIServer
from tests.rosproc import NodeProcess, TestNode

pytestmark = pytest.mark.ros

SENTINEL = 'sk-SENTINEL-node-1c0ffee-do-not-leak'
RANK_OK = '```json\n{"ranking": [[3], [2], [1], [0]]}\n```'
USAGE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)


def rank_request(episodes):
    return RankTrajectories.Request(task='touch', task_description='',
                                    episodes=[episode_to_msg(e) for e in episodes])


def test_openai_backend_over_ros(tmp_path, touch_episodes):
    transcript = tmp_path / 'transcript.jsonl'
    env = os.environ.copy()
    env['OPENAI_API_KEY'] = SENTINEL
    with FakeOpenAIServer() as server, TestNode('llm_probe') as probe:
        node = NodeProcess('selfalign_llm', 'llm_node', env=env, params={
            'backend': 'openai', 'model': 'fake-model', 'base_url': server.base_url,
            'timeout_s': 5.0, 'max_retries': 0, 'outer_retries': 0, 'max_reasks': 1,
            'transcript_path': str(transcript), 'usage_period_s': 0.5})
        with node:
            # happy path, three roles
            server.push({'reply': proposal_reply('touch')})
            resp = probe.call(ProposeReward, '/selfalign/propose_reward',
                              ProposeReward.Request(task='touch'), timeout_s=30)
            assert resp.success, resp.message + node.output()
            assert list(resp.spec.param_names) == list(
                load_reference_template('touch').param_names)
            assert resp.spec.source == 'llm:fake-model' and resp.model == 'fake-model'
            assert resp.plan.startswith('1. Approach') and len(resp.spec.sha256) == 64

            server.push({'reply': RANK_OK})
            resp = probe.call(RankTrajectories, '/selfalign/rank_trajectories',
                              rank_request(touch_episodes))
            assert resp.success, resp.message
            assert list(resp.ranks) == [3, 2, 1, 0]
            assert len(resp.descriptions) == 4 and 'contact' in resp.descriptions[3]

            template = load_reference_template('touch')
            server.push({'reply': json.dumps({'analysis': 'threshold too high',
                                              'parameters': {'force_threshold': 0.127}})})
            resp = probe.call(AnalyzeFailure, '/selfalign/analyze_failure',
                              AnalyzeFailure.Request(
                                  task='touch', spec=spec_to_msg(template, task='touch'),
                                  episodes=[episode_to_msg(e) for e in touch_episodes],
                                  success_rate=0.0, rank_agreement=0.9))
            assert resp.success, resp.message
            assert list(resp.param_names) == ['force_threshold']
            assert resp.param_values[0] == pytest.approx(0.127)

            # a ranking that is never a permutation: success false, node alive
            server.push(*[{'reply': '{"ranking": [[0], [0], [1], [2]]}'}] * 2)
            resp = probe.call(RankTrajectories, '/selfalign/rank_trajectories',
                              rank_request(touch_episodes))
            assert not resp.success and 'missing' in resp.message and node.alive()

            # a task nobody knows: success false with the valid names
            resp = probe.call(ProposeReward, '/selfalign/propose_reward',
                              ProposeReward.Request(task='juggle'))
            assert not resp.success and 'touch' in resp.message

            # responsiveness: a propose answers while a rank call hangs in the server
            server.push({'hang_s': 4.0, 'reply': RANK_OK}, {'reply': proposal_reply('push')})
            client = probe.node.create_client(RankTrajectories, '/selfalign/rank_trajectories')
            slow = client.call_async(rank_request(touch_episodes))
            probe.wait_until(lambda: server.pending == 1, 10, 'the slow call to reach the server')
            fast = probe.call(ProposeReward, '/selfalign/propose_reward',
                              ProposeReward.Request(task='push'))
            assert fast.success and not slow.done()  # answered while the rank call waits
            probe.wait_until(slow.done, 10, 'the slow rank call')
            assert slow.result().success

            # usage topic: calls, failures
            def usage():
                msgs = probe.messages('/selfalign/llm_usage')
                return json.loads(msgs[-1].data) if msgs else {}
            probe.record(String, '/selfalign/llm_usage', USAGE_QOS)
            probe.wait_until(lambda: usage().get('calls') == 7, 10, 'usage with 7 calls')
            u = usage()
            assert u['failures'] == 2 and u['backend'] == 'openai' and u['prompt_tokens'] > 0
            assert node.stop() == 0  # clean SIGINT shutdown
            out = node.output()
    recs = read_transcript(transcript)
    assert [r['outcome'] for r in recs] == ['ok', 'ok', 'ok', 'parse_error', 'parse_error',
                                            'ok', 'ok']
    assert SENTINEL not in transcript.read_text() and SENTINEL not in out
    assert 'propose_reward: ok' in out


def test_a_re_sent_request_is_answered_from_the_first_llm_call(tmp_path):
    """A caller whose reply was lost re-sends the same request_id: llm_node answers 'pending'
    while the first call runs and the stored answer after it; the LLM server sees one call."""
    env = os.environ.copy()
    env['OPENAI_API_KEY'] = SENTINEL
    with FakeOpenAIServer() as server, TestNode('llm_probe_resend') as probe:
        with NodeProcess('selfalign_llm', 'llm_node', env=env, params={
                'backend': 'openai', 'model': 'fake-model', 'base_url': server.base_url,
                'timeout_s': 10.0, 'max_retries': 0, 'outer_retries': 0}) as node:
            server.push({'hang_s': 3.0, 'reply': proposal_reply('touch')})
            client = probe.node.create_client(ProposeReward, '/selfalign/propose_reward')
            assert client.wait_for_service(timeout_sec=20.0), node.output()
            request = ProposeReward.Request(task='touch', request_id='call-1')
            first = client.call_async(request)
            probe.wait_until(lambda: server.pending == 1, 20, 'the call to reach the LLM server')
            busy = probe.call(ProposeReward, '/selfalign/propose_reward', request)
            assert busy.pending and not busy.success and not first.done()
            probe.wait_until(first.done, 20, 'the first call')
            answer = first.result()
            assert answer.success and not answer.pending, answer.message
            again = probe.call(ProposeReward, '/selfalign/propose_reward', request)
            assert again.success and again.spec.sha256 == answer.spec.sha256
            assert len(server.requests) == 1  # one LLM call for three requests
            assert node.stop() == 0
            assert 'a re-send of request call-1' in node.output()


def test_scripted_backend_over_ros(tmp_path, make_episode):
    with TestNode('llm_probe2') as probe, NodeProcess('selfalign_llm', 'llm_node', params={
            'backend': 'scripted', 'teacher_beta': 0.0, 'teacher_mistake_rate': 0.0}) as node:
        resp = probe.call(ProposeReward, '/selfalign/propose_reward',
                          ProposeReward.Request(task='push'), timeout_s=30)
        assert resp.success, resp.message + node.output()
        assert resp.model == 'scripted-teacher (simulated)'
        assert resp.spec.param_values[list(resp.spec.param_names).index('w_push')] == 2.0
        eps = [make_episode('push', approach=1.0, force=0.5, push=p) for p in (0.0, 1.0, 0.5)]
        resp = probe.call(RankTrajectories, '/selfalign/rank_trajectories',
                          RankTrajectories.Request(task='push', episodes=[
                              episode_to_msg(e) for e in eps]))
        assert resp.success and list(resp.ranks) == [2, 0, 1]
        push = load_reference_template('push')
        resp = probe.call(AnalyzeFailure, '/selfalign/analyze_failure', AnalyzeFailure.Request(
            task='push', spec=spec_to_msg(push, task='push'), episodes=[
                episode_to_msg(eps[0])], success_rate=0.0, rank_agreement=0.95))
        assert resp.success and dict(zip(resp.param_names, resp.param_values)) == {
            'w_push': pytest.approx(20.0)}


def _with_key_frames(msg, colors):
    """An Episode message carrying one JPEG key frame per colour, at steps 0, 50, 99."""
    from selfalign_core import contract_msgs as cm

    for step, color in zip((0, 50, 99), colors):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:] = color
        msg.key_frames.append(cm.jpeg_msg(frame, 0))
        msg.key_frame_steps.append(step)
    return msg


@pytest.mark.parametrize('vision', [True, False])
def test_vision_sends_each_episodes_key_frames_labelled_over_http(tmp_path, touch_episodes,
                                                                   vision):
    import base64

    import cv2

    transcript = tmp_path / 'transcript.jsonl'
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    episodes = [_with_key_frames(episode_to_msg(e), colors) for e in touch_episodes]
    with FakeOpenAIServer() as server, TestNode('llm_vision_probe') as probe, \
            NodeProcess('selfalign_llm', 'llm_node', params={
                'backend': 'openai', 'model': 'fake-vision', 'base_url': server.base_url,
                'vision': vision, 'max_retries': 0, 'outer_retries': 0,
                'transcript_path': str(transcript)}) as node:
        server.push({'reply': RANK_OK})
        resp = probe.call(RankTrajectories, '/selfalign/rank_trajectories',
                          RankTrajectories.Request(task='touch', episodes=episodes),
                          timeout_s=30)
        assert resp.success, resp.message + node.output()
    content = server.requests[0]['messages'][-1]['content']
    if not vision:
        assert isinstance(content, str)  # text only: no image parts at all
        assert read_transcript(transcript)[0]['images'] == []
        return
    labels = [p['text'] for p in content if p['type'] == 'text'][1:]
    urls = [p['image_url']['url'] for p in content if p['type'] == 'image_url']
    assert labels == [f'Episode {i}, step {s}:' for i in range(1, 5) for s in (0, 50, 99)]
    assert len(urls) == 12
    png = np.frombuffer(base64.b64decode(urls[1].split(',', 1)[1]), np.uint8)
    rgb = cv2.imdecode(png, cv2.IMREAD_COLOR)[24, 32, ::-1]
    assert np.abs(rgb.astype(int) - (0, 255, 0)).max() < 20  # episode 1, step 50: green
    recorded = read_transcript(transcript)[0]['images']
    assert len(recorded) == 12 and all(len(im['sha256']) == 16 for im in recorded)
    assert 'base64' not in transcript.read_text()  # references, not bytes


def test_scripted_teacher_says_it_ignores_key_frames(make_episode):
    eps = [_with_key_frames(episode_to_msg(make_episode('push', approach=1.0, force=0.5,
                                                        push=p)), [(9, 9, 9)] * 3)
           for p in (0.0, 1.0)]
    with TestNode('llm_probe3') as probe, NodeProcess('selfalign_llm', 'llm_node', params={
            'backend': 'scripted', 'vision': True, 'teacher_beta': 0.0,
            'teacher_mistake_rate': 0.0}) as node:
        resp = probe.call(RankTrajectories, '/selfalign/rank_trajectories',
                          RankTrajectories.Request(task='push', episodes=eps), timeout_s=30)
        assert resp.success and list(resp.ranks) == [1, 0]
        assert 'key frames are ignored' in node.output()
