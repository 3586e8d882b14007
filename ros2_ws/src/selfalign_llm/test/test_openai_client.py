"""The real openai client over real HTTP (a local scripted server), through LLMClient.

Happy paths for the three roles, and every failure the brief names: malformed JSON, missing
code block, non-permutation ranking, truncated reply, invalid template (repair), 429, 500s, a
hang past the timeout, a truncated HTTP body, a key echoed by the server. Each ends in a retry,
a clear LLMError, or success; the transcript keeps every attempt and never the key. Replay of
a recorded transcript reproduces the run.
"""

import base64
import json
import math

import cv2
import numpy as np
import pytest

from selfalign_llm.backends.base import BackendError
from selfalign_llm.backends.openai_backend import OpenAIBackend, OpenAIConfig
from selfalign_llm.backends.replay import ReplayBackend
from selfalign_llm.backends.scripted import proposal_reply
from selfalign_llm.client import ClientConfig, LLMClient, LLMError
from selfalign_llm.transcript import read_transcript, Transcript
from selfalign_reward.template import load_reference_template
from tests.fake_openai_server import FakeOpenAIServer

SENTINEL = 'sk-SENTINEL-7f3a9c-do-not-leak'
RANK_OK = '```json\n{"ranking": [[3], [2], [1], [0]]}\n```'
ANALYSIS_OK = json.dumps({'analysis': 'threshold too high for a light touch',
                          'parameters': {'force_threshold': 0.127}})


@pytest.fixture
def server():
    srv = FakeOpenAIServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', SENTINEL)


def make_client(server, tmp_path, timeout_s=5.0, max_retries=0, outer_retries=1,
                max_reasks=2, max_repairs=2, vision=False, call_deadline_s=300.0):
    backend = OpenAIBackend(OpenAIConfig(model='fake-model', base_url=server.base_url,
                                         timeout_s=timeout_s, max_retries=max_retries,
                                         vision=vision))
    return LLMClient(backend, Transcript(tmp_path / 'transcript.jsonl'), ClientConfig(
        max_reasks=max_reasks, max_repairs=max_repairs, outer_retries=outer_retries,
        retry_backoff_s=0.01, call_deadline_s=call_deadline_s))


def outcomes(tmp_path):
    return [r['outcome'] for r in read_transcript(tmp_path / 'transcript.jsonl')]


def test_happy_path_three_roles(server, tmp_path, touch_episodes):
    server.push({'reply': proposal_reply('touch')}, {'reply': RANK_OK},
                {'reply': f'Here you go:\n```json\n{ANALYSIS_OK}\n```'})
    client = make_client(server, tmp_path)
    template, plan = client.propose_reward('touch')
    assert template.param_names == load_reference_template('touch').param_names
    assert plan.startswith('1. Approach')
    assert client.rank('touch', touch_episodes) == [3, 2, 1, 0]
    analysis, prop = client.analyze_failure('touch', template, template.initial_theta(),
                                            touch_episodes, 0.0, 0.9)
    assert prop == {'force_threshold': 0.127} and 'threshold' in analysis
    # what went over the wire
    assert [r['model'] for r in server.requests] == ['fake-model'] * 3
    assert all(r['_authorization_present'] for r in server.requests)
    assert 'Episode 3:' in server.requests[1]['messages'][-1]['content']
    recs = read_transcript(tmp_path / 'transcript.jsonl')
    assert [(r['role'], r['outcome']) for r in recs] == [
        ('propose', 'ok'), ('rank', 'ok'), ('analyze_failure', 'ok')]
    assert all(r['prompt_tokens'] > 100 and r['completion_tokens'] > 0 for r in recs)
    assert recs[1]['reply'] == RANK_OK and recs[0]['messages'][0]['role'] == 'system'
    totals = client.usage()
    assert totals['calls'] == 3 and totals['failures'] == 0 and totals['models'] == ['fake-model']


def test_malformed_json_is_reasked_with_the_error(server, tmp_path, touch_episodes):
    server.push({'reply': '{"ranking": [[3], [2], [1], [0]],}'}, {'reply': RANK_OK})
    client = make_client(server, tmp_path)
    assert client.rank('touch', touch_episodes) == [3, 2, 1, 0]
    assert outcomes(tmp_path) == ['parse_error', 'ok']
    second = server.requests[1]['messages']
    assert second[-2] == {'role': 'assistant', 'content': '{"ranking": [[3], [2], [1], [0]],}'}
    assert 'not valid JSON' in second[-1]['content']


def test_missing_code_block_then_valid(server, tmp_path):
    server.push({'reply': 'The reward should be the negative distance.'},
                {'reply': proposal_reply('push')})
    client = make_client(server, tmp_path)
    template, _ = client.propose_reward('push')
    assert 'w_push' in template.param_names
    assert outcomes(tmp_path) == ['parse_error', 'ok']
    assert 'no code block' in server.requests[1]['messages'][-1]['content']


def test_non_permutation_ranking_exhausts_reasks(server, tmp_path, touch_episodes):
    bad = '{"ranking": [[0], [1], [1], [2]]}'
    server.push(*[{'reply': bad}] * 3)
    client = make_client(server, tmp_path, max_reasks=2)
    with pytest.raises(LLMError, match=r'after 2 re-asks.*\[3\] are missing'):
        client.rank('touch', touch_episodes)
    assert outcomes(tmp_path) == ['parse_error'] * 3
    assert client.usage()['failures'] == 3


def test_truncated_reply_is_reasked_as_cut_off(server, tmp_path):
    cut = proposal_reply('touch')[:400]
    server.push({'reply': cut, 'finish_reason': 'length'}, {'reply': proposal_reply('touch')})
    client = make_client(server, tmp_path)
    client.propose_reward('touch')
    recs = read_transcript(tmp_path / 'transcript.jsonl')
    assert [r['outcome'] for r in recs] == ['parse_error', 'ok']
    assert recs[0]['finish_reason'] == 'length' and recs[0]['reply'] == cut
    assert 'cut off at the token limit' in server.requests[1]['messages'][-1]['content']


def test_invalid_template_goes_to_repair(server, tmp_path):
    good = proposal_reply('touch')
    bad = good.replace("f['contact_force']", "f['contact_forse']")
    server.push({'reply': bad}, {'reply': 'Renamed the feature.\n' + good.split('## Reward')[1]})
    client = make_client(server, tmp_path)
    template, plan = client.propose_reward('touch')
    assert 'contact_force' in template.code and plan.startswith('1. Approach')
    recs = read_transcript(tmp_path / 'transcript.jsonl')
    assert [(r['role'], r['outcome']) for r in recs] == [('propose', 'invalid_template'),
                                                          ('repair', 'ok')]
    repair_prompt = server.requests[1]['messages'][-1]['content']
    assert 'contact_forse' in repair_prompt and recs[0]['error'] in repair_prompt


def test_invalid_template_repairs_exhausted(server, tmp_path):
    bad = proposal_reply('touch').replace('np.tanh', 'np.fft.fft')
    server.push(*[{'reply': bad}] * 3)
    client = make_client(server, tmp_path, max_repairs=2)
    with pytest.raises(LLMError, match='no valid reward template after 2 repairs'):
        client.propose_reward('touch')
    assert outcomes(tmp_path) == ['invalid_template'] * 3


def test_rate_limit_retried_by_the_client_then_by_us(server, tmp_path, touch_episodes):
    server.push({'status': 429, 'retry_after_ms': 10}, {'reply': RANK_OK})
    client = make_client(server, tmp_path, max_retries=2)
    assert client.rank('touch', touch_episodes) == [3, 2, 1, 0]
    assert outcomes(tmp_path) == ['ok'] and len(server.requests) == 2  # the client's own retry
    server.push({'status': 429, 'retry_after_ms': 10}, {'reply': RANK_OK})
    client = make_client(server, tmp_path / 'b', max_retries=0, outer_retries=1)
    assert client.rank('touch', touch_episodes) == [3, 2, 1, 0]
    assert outcomes(tmp_path / 'b') == ['rate_limited', 'ok']  # our outer retry


def test_server_errors_end_in_a_clear_error(server, tmp_path, touch_episodes):
    server.responder = lambda body: {'status': 500, 'retry_after_ms': 5, 'message': 'boom'}
    client = make_client(server, tmp_path, max_retries=1, outer_retries=2)
    with pytest.raises(LLMError, match=r'no reply after 3 tries: http_error: HTTP 500'):
        client.rank('touch', touch_episodes)
    assert outcomes(tmp_path) == ['http_error'] * 3
    assert len(server.requests) == 6  # (1 + max_retries) * (1 + outer_retries)


def test_hang_past_timeout_then_success(server, tmp_path, touch_episodes):
    server.push({'hang_s': 3.0}, {'reply': RANK_OK})
    client = make_client(server, tmp_path, timeout_s=0.5, max_retries=0, outer_retries=1)
    assert client.rank('touch', touch_episodes) == [3, 2, 1, 0]
    recs = read_transcript(tmp_path / 'transcript.jsonl')
    assert [r['outcome'] for r in recs] == ['timeout', 'ok']
    assert 0.4 < recs[0]['latency_s'] < 2.5


def test_one_deadline_bounds_every_retry_and_reask_of_a_call(server, tmp_path, touch_episodes):
    """Timeouts x client retries x our retries x re-asks would take 5 x 3 x 4 x 3 = 180 s; the
    call's deadline (1.5 s) ends it, with a transcript line saying so."""
    server.responder = lambda body: {'hang_s': 3.0, 'reply': RANK_OK}
    client = make_client(server, tmp_path, timeout_s=5.0, max_retries=2, outer_retries=3,
                         call_deadline_s=1.5)
    with pytest.raises(LLMError, match='call deadline of 1.5 s'):
        client.rank('touch', touch_episodes)  # each request got a share of the 1.5 s
    got = outcomes(tmp_path)
    assert got[-1] == 'deadline' and set(got[:-1]) == {'timeout'}, got
    server.responder = None
    server.push({'reply': RANK_OK})  # the next call has a deadline of its own
    assert client.rank('touch', touch_episodes) == [3, 2, 1, 0]


def test_truncated_http_body_is_retried(server, tmp_path, touch_episodes):
    server.push({'raw': '{"id": "x", "choices": [{"message": {"content": "{\\"rank'},
                {'reply': RANK_OK})
    client = make_client(server, tmp_path)
    assert client.rank('touch', touch_episodes) == [3, 2, 1, 0]
    assert outcomes(tmp_path) == ['bad_response', 'ok']


def test_key_never_reaches_transcript_or_errors(server, tmp_path, touch_episodes, capfd):
    # A server that echoes the key in its error message (some do, partially).
    server.push({'status': 401, 'message': f'Incorrect API key provided: {SENTINEL}'},
                {'status': 400, 'message': f'bad request for key {SENTINEL}'})
    client = make_client(server, tmp_path, outer_retries=0)
    with pytest.raises(LLMError) as e1:
        client.rank('touch', touch_episodes)
    with pytest.raises(LLMError) as e2:
        client.rank('touch', touch_episodes)
    assert outcomes(tmp_path) == ['auth_error', 'http_error']
    assert SENTINEL not in str(e1.value) and 'OPENAI_API_KEY' in str(e1.value)
    text = (tmp_path / 'transcript.jsonl').read_text()
    assert SENTINEL not in text and '<redacted>' in text
    out = capfd.readouterr()
    assert SENTINEL not in out.out + out.err
    assert 'bad request for key <redacted>' in str(e2.value)  # errors get logged


def test_no_key_for_a_remote_server_is_a_clear_error(monkeypatch):
    monkeypatch.delenv('OPENAI_API_KEY')
    with pytest.raises(BackendError, match='set the environment variable OPENAI_API_KEY'):
        OpenAIBackend(OpenAIConfig(base_url='https://llm.example.com/v1'))
    OpenAIBackend(OpenAIConfig(base_url='http://127.0.0.1:9/v1'))  # local: dummy key


def test_vision_sends_png_frames_and_transcript_keeps_placeholders(server, tmp_path,
                                                                     touch_episodes):
    server.push({'reply': RANK_OK})
    client = make_client(server, tmp_path, vision=True)
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[8:24, 8:24] = (0, 255, 0)
    client.rank_detailed('touch', touch_episodes, frames=[frame, frame])
    parts = server.requests[0]['messages'][-1]['content']
    urls = [p['image_url']['url'] for p in parts if p['type'] == 'image_url']
    assert len(urls) == 2 and urls[0].startswith('data:image/png;base64,')
    png = np.frombuffer(base64.b64decode(urls[0].split(',', 1)[1]), np.uint8)
    assert (cv2.imdecode(png, cv2.IMREAD_COLOR)[16, 16] == (0, 255, 0)).all()  # BGR green
    text = (tmp_path / 'transcript.jsonl').read_text()
    assert 'base64' not in text
    assert [im['shape'] for im in read_transcript(tmp_path / 'transcript.jsonl')[0]['images']] \
        == [[32, 32, 3]] * 2
    server.push({'reply': RANK_OK})
    make_client(server, tmp_path / 'b', vision=False).rank_detailed(
        'touch', touch_episodes, frames=[frame])
    assert isinstance(server.requests[1]['messages'][-1]['content'], str)  # text only


def test_replay_reproduces_a_run_exactly(server, tmp_path, touch_episodes):
    server.push({'reply': 'no code'}, {'reply': proposal_reply('touch')},
                {'status': 500}, {'reply': RANK_OK},
                {'reply': ANALYSIS_OK})
    live = make_client(server, tmp_path)
    t1, _ = live.propose_reward('touch')
    r1 = live.rank('touch', touch_episodes)
    a1 = live.analyze_failure('touch', t1, t1.initial_theta(), touch_episodes, 0.0, 0.9)
    server.stop()  # replay needs no server

    recorded = tmp_path / 'transcript.jsonl'
    replay = LLMClient(ReplayBackend(recorded, strict_prompts=True),
                       Transcript(tmp_path / 'replayed.jsonl'),
                       ClientConfig(outer_retries=1, retry_backoff_s=0.0))
    t2, _ = replay.propose_reward('touch')
    assert t2.sha256 == t1.sha256
    assert replay.rank('touch', touch_episodes) == r1
    assert replay.analyze_failure('touch', t2, t2.initial_theta(), touch_episodes, 0.0,
                                  0.9) == a1
    a, b = read_transcript(recorded), read_transcript(tmp_path / 'replayed.jsonl')
    assert [(r['role'], r['outcome'], r['reply']) for r in a] == \
        [(r['role'], r['outcome'], r['reply']) for r in b]
    assert replay.model == 'fake-model'

    mismatch = LLMClient(ReplayBackend(recorded), Transcript(None))
    with pytest.raises(LLMError, match="recorded role 'propose', requested 'rank'"):
        mismatch.rank('touch', touch_episodes)
    assert math.isfinite(len(b))
