"""selfalign_bringup.cli's embedded runner: a bridge thread that fails ends the run."""

import threading

import pytest
import rclpy

from selfalign_bringup.cli import _run_bridge


@pytest.mark.ros
def test_a_failing_bridge_thread_ends_the_embedded_run_non_zero():
    """Before, a bridge thread that raised died silently and left the policy waiting for a
    state forever; now it logs, marks itself failed (the runner exits 1) and shuts the run's
    context down (the runner's wait ends)."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('pybullet_bridge', context=ctx)

    def spin(node, executor, stop):
        raise RuntimeError('simulated crash in the bridge')

    thread = threading.Thread(target=_run_bridge, args=(spin, node, None, threading.Event()))
    thread.start()
    thread.join(timeout=10)
    try:
        assert not thread.is_alive()
        assert node.exit_code == 1
        assert not ctx.ok()
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
