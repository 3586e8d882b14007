"""selfalign_core.executors: a queued callback is submitted once, not once per wake-up."""

import threading
import time

import pytest
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor as RclpyMultiThreadedExecutor

from selfalign_core.executors import MultiThreadedExecutor


def _submissions_while_workers_busy(executor_cls: type, wakeups: int = 50) -> tuple[int, int]:
    """Both workers held; a guard-condition callback queued; the executor woken ``wakeups`` times.

    Returns (largest number of pending submissions the executor tracked, times the queued
    callback ran once the workers were free). The wake-ups stand in for what wakes a real node
    while its callbacks wait for a worker: new messages, finished callbacks.
    """
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('executor_probe', context=context)
    executor = executor_cls(num_threads=2, context=context)
    release = threading.Event()
    holding = threading.Semaphore(0)
    ran = []

    def hold() -> None:  # a long callback (an LLM call, a blocking wait) holding a worker
        holding.release()
        release.wait(10.0)

    group = ReentrantCallbackGroup()
    holders = [node.create_guard_condition(hold, callback_group=group) for _ in range(2)]
    guard = node.create_guard_condition(lambda: ran.append(1))
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    peak = 0
    try:
        for h in holders:
            h.trigger()
        assert holding.acquire(timeout=10) and holding.acquire(timeout=10), 'workers not held'
        guard.trigger()  # its callback is now queued behind the two held workers
        for _ in range(wakeups):
            time.sleep(0.005)
            executor.wake()
            peak = max(peak, len(executor._futures))
        time.sleep(0.05)
        peak = max(peak, len(executor._futures))
    finally:
        release.set()
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.01)
        executor.shutdown(timeout_sec=5)
        thread.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return peak, len(ran)


def test_queued_callback_is_submitted_once_and_runs_once():
    peak, ran = _submissions_while_workers_busy(MultiThreadedExecutor)
    assert ran == 1
    # two holders + the queued guard callback; never one entry per wake-up
    assert peak <= 3, f'{peak} pending submissions for 3 callbacks'


def test_upstream_executor_resubmits_on_every_wakeup():
    """Documents the rclpy 7.1 behaviour the subclass exists for (ros2/rclpy#1452)."""
    peak, _ = _submissions_while_workers_busy(RclpyMultiThreadedExecutor)
    if peak <= 3:
        pytest.skip('this rclpy submits a queued callback once: the subclass may go')
    assert peak > 10
