"""selfalign_core.polled: subscriptions their owner takes, not the executor; one /clock."""

import threading
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String

from selfalign_core.polled import PolledSubscription, PollGroup, SharedSimClock


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=['--ros-args', '-r', 'remapped:=chatter'])
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_a_polled_subscription_is_remapped_taken_by_its_owner_and_never_by_the_executor(
        context):
    node = rclpy.create_node('poller', namespace='/ns', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    spinning.start()
    try:
        sub = PolledSubscription(node, String, 'remapped', 10)
        assert sub.topic == '/ns/chatter'  # resolved and remapped as create_subscription does
        assert list(node.subscriptions) == []  # nothing for an executor to wait on
        pub = node.create_publisher(String, 'chatter', 10)
        assert _wait_for(lambda: pub.get_subscription_count() == 1)
        group = PollGroup(node, [sub])
        assert not group.wait(0.05)
        for text in ('a', 'b', 'c'):
            pub.publish(String(data=text))
        assert group.wait(5.0)
        time.sleep(0.1)  # the executor spins all the while and takes none of them
        assert [m.data for m in sub.take_all()] == ['a', 'b', 'c']
        assert sub.take() is None and not group.wait(0.05)
        pub.publish(String(data='d'))
        pub.publish(String(data='e'))
        assert _wait_for(lambda: group.wait(0.0))
        msg, info = sub.take_with_info()
        assert msg.data == 'd' and info['received_timestamp'] > 0
        pub.publish(String(data='f'))
        assert _wait_for(lambda: group.wait(0.0))
        assert sub.take_latest().data == 'f' and sub.take() is None  # 'e' dropped as older
        sub.destroy()
    finally:
        executor.shutdown(timeout_sec=5)
        spinning.join(timeout=5)
        node.destroy_node()


def test_nodes_share_one_clock_subscription_and_follow_sim_time(context):
    sim = rclpy.parameter.Parameter('use_sim_time', value=True)
    nodes = [rclpy.create_node(f'n{i}', context=context, parameter_overrides=[sim])
             for i in range(4)]
    wall = rclpy.create_node('wall_clock_node', context=context)
    owner = rclpy.create_node('owner', context=context, parameter_overrides=[sim])
    probe = rclpy.create_node('probe', context=context)
    pub = probe.create_publisher(Clock, '/clock', 10)
    assert _wait_for(lambda: pub.get_subscription_count() == 5)  # each sim-time node's own
    shared = SharedSimClock(owner, [*nodes, wall, owner])
    try:
        assert shared.nodes == [*nodes, owner]
        assert _wait_for(lambda: pub.get_subscription_count() == 1)  # the shared one alone
        for sec in (7, 8):
            pub.publish(Clock(clock=rclpy.time.Time(seconds=sec).to_msg()))
            assert _wait_for(lambda s=sec: all(n.get_clock().now().nanoseconds == s * 10**9
                                         for n in (*nodes, owner)))
        assert wall.get_clock().now().nanoseconds > 10**18  # wall time, left alone
    finally:
        shared.close()
        for n in (*nodes, wall, owner, probe):
            n.destroy_node()


def test_a_clock_for_logs_follows_sim_time_at_a_bounded_rate(context):
    """min_period_s: a process whose clock only stamps logs wakes at most 1/min_period_s times
    a second for /clock, not once per sim step, and still ends on the newest time."""
    sim = rclpy.parameter.Parameter('use_sim_time', value=True)
    node = rclpy.create_node('logger_node', context=context, parameter_overrides=[sim])
    probe = rclpy.create_node('clock_probe', context=context)
    pub = probe.create_publisher(Clock, '/clock', 10)
    shared = SharedSimClock(node, [node], min_period_s=0.25)
    seen = set()
    try:
        assert _wait_for(lambda: pub.get_subscription_count() == 1)
        for step in range(1, 101):  # 1 s of 100 Hz sim steps
            pub.publish(Clock(clock=rclpy.time.Time(nanoseconds=step * 10**7).to_msg()))
            end = time.monotonic() + 0.01
            while time.monotonic() < end:
                seen.add(node.get_clock().now().nanoseconds)
        assert _wait_for(lambda: node.get_clock().now().nanoseconds == 100 * 10**7)
        assert 2 <= len(seen - {0}) <= 7, sorted(seen)  # ~4 updates, not ~100
    finally:
        shared.close()
        node.destroy_node()
        probe.destroy_node()


def test_a_poll_after_shutdown_returns_nothing_without_spinning():
    """A thread that loops on ``ready`` until its own stop flag must not spin a core between
    the context going down (Ctrl-C) and its owner's close()."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('poller_down', context=ctx)
    group = PollGroup(node, [PolledSubscription(node, String, 'chatter', 10)])
    rclpy.shutdown(context=ctx)
    calls, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.3:
        assert group.ready(1.0) == []
        calls += 1
    assert calls <= 10  # each call waits instead of returning at once (~0.05 s)
