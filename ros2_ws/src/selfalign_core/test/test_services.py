"""selfalign_core.services: a lost service reply costs one re-send, never a second run."""

import threading
import time

import pytest
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor

from selfalign_core.services import AnswerOnce, call_with_resend
from selfalign_interfaces.srv import ProposeReward, SetRewardParams


def test_answer_once_runs_the_handler_once_per_request_id():
    release = threading.Event()
    runs = []

    def handler(req, resp):
        runs.append(req.task)
        release.wait(5.0)
        resp.success, resp.plan = True, f'plan for {req.task}'
        return resp

    serve = AnswerOnce(keep=2)(handler)
    first = ProposeReward.Request(task='push', request_id='a')
    answer = {}
    worker = threading.Thread(target=lambda: answer.update(r=serve(
        first, ProposeReward.Response())))
    worker.start()
    while not runs:
        time.sleep(0.01)
    # a re-send while the first call runs: 'pending' at once, the handler not run again
    busy = serve(ProposeReward.Request(task='push', request_id='a'), ProposeReward.Response())
    assert busy.pending and not busy.success and 'still being answered' in busy.message
    release.set()
    worker.join(5.0)
    assert answer['r'].success and not answer['r'].pending
    # a re-send after it finished: the stored answer
    again = serve(ProposeReward.Request(task='push', request_id='a'), ProposeReward.Response())
    assert again.success and again.plan == 'plan for push'
    assert runs == ['push']
    # no id: served every time; other ids run; only `keep` finished answers are kept
    for rid in ('', '', 'b', 'c'):
        serve(ProposeReward.Request(task='touch', request_id=rid), ProposeReward.Response())
    assert runs == ['push', 'touch', 'touch', 'touch', 'touch']
    serve(ProposeReward.Request(task='grasp_lift', request_id='a'), ProposeReward.Response())
    assert runs[-1] == 'grasp_lift'  # 'a' was the oldest of three: forgotten


def test_answer_once_forgets_a_request_whose_handler_raised():
    calls = []

    def handler(req, resp):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('boom')
        resp.success = True
        return resp

    serve = AnswerOnce()(handler)
    with pytest.raises(RuntimeError):
        serve(ProposeReward.Request(request_id='x'), ProposeReward.Response())
    assert serve(ProposeReward.Request(request_id='x'), ProposeReward.Response()).success
    assert len(calls) == 2


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _serve(context, handler):
    """A server node spinning on its own executor whose first reply never goes on the wire
    (what rmw_fastrtps does when the client's reply reader has not matched yet)."""
    node = rclpy.create_node('llm_server', context=context)
    service = node.create_service(ProposeReward, 'svc', handler,
                                  callback_group=ReentrantCallbackGroup())
    sent, dropped = [], []
    real_send = service.send_response

    def send_response(response, header):
        if not dropped:
            dropped.append(response)
            return
        sent.append(response)
        real_send(response, header)

    service.send_response = send_response
    return node, sent, dropped


def test_a_lost_reply_is_recovered_by_a_re_send_without_a_second_run(context):
    runs = []

    def handler(req, resp):
        runs.append(req.request_id)
        time.sleep(0.2)  # the 'LLM call'
        resp.success, resp.plan = True, 'the plan'
        return resp

    server, sent, dropped = _serve(context, AnswerOnce()(handler))
    client_node = rclpy.create_node('caller', context=context)
    client = client_node.create_client(ProposeReward, 'svc')
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    executor.add_node(server)
    executor.add_node(client_node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        start = time.monotonic()
        reply, why = call_with_resend(client, ProposeReward.Request(task='push'), 20.0,
                                      resend_after_s=0.5)
        assert reply is not None, why
        assert reply.success and reply.plan == 'the plan' and not reply.pending
        assert len(dropped) == 1 and len(runs) == 1 and runs[0]  # an id was set
        assert time.monotonic() - start < 10.0  # one re-send interval, not the deadline
        # without a re-send, the same loss is a timeout
        dropped.clear()
        reply, why = call_with_resend(client, ProposeReward.Request(task='push'), 1.5,
                                      resend_after_s=float('inf'))
        assert reply is None and 'no reply within 1.5 s' in why
        # a request type without request_id is never sent twice (a re-send could repeat it)
        sets = []

        def on_set(req, resp):
            sets.append(req.reason)
            time.sleep(0.5)  # five re-send intervals
            resp.success = True
            return resp

        set_server = rclpy.create_node('set_server', context=context)
        set_server.create_service(SetRewardParams, 'set', on_set)
        executor.add_node(set_server)
        set_client = client_node.create_client(SetRewardParams, 'set')
        assert set_client.wait_for_service(timeout_sec=10.0)
        reply, _ = call_with_resend(set_client, SetRewardParams.Request(reason='r'), 10.0,
                                    resend_after_s=0.1)
        assert reply is not None and reply.success and sets == ['r']
    finally:
        executor.shutdown()
