"""The embedded run's in-process link: the policy's arm port steps its bridge directly.

Real rclpy and Fast DDS, a real PyBullet bridge node and a real ``ArmPort`` in one process, a
probe node in another context listening over DDS, as monitor_node does in the embedded run.
"""

from pathlib import Path
import sys
import threading

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState

from selfalign_bringup.pybullet_bridge import PyBulletBridge, spin_lockstep
from selfalign_core import contract_msgs as cm
from selfalign_core.executors import SingleThreadedExecutor
from selfalign_core.polled import SharedSimClock
from selfalign_policy.policy_node import ArmPort

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from tests.rosproc import TestNode  # noqa: E402

pytestmark = pytest.mark.ros


def test_a_linked_bridge_steps_once_per_command_and_still_publishes_every_state():
    """The port's command steps the bridge on the calling thread and the step's state lands in
    the port's StateSync at once; the probe still receives that state and /clock over DDS; the
    process's sim-time clocks are set as /clock goes out (no /clock subscription); a twist that
    arrives over the topic no longer steps the bridge (it would step it twice per command)."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    bridge = PyBulletBridge(context=ctx, parameter_overrides=[Parameter('task', value='touch')])
    owner = rclpy.create_node('policy_like', context=ctx,
                              parameter_overrides=[Parameter('use_sim_time', value=True)])
    port = ArmPort(owner, '', 'state', 0, 'camera/video/image_raw', polled=True)
    clock = SharedSimClock(owner, [owner], subscribe=False)
    stop = threading.Event()
    spinner = None
    try:
        with TestNode('link_probe') as probe:
            probe.record(JointState, '/joint_states', 50)
            probe.record(Clock, '/clock', 50)
            pub = probe.node.create_publisher(type(cm.twist_msg(np.zeros(3), 0)),
                                              '/servo_node/delta_twist_cmds', 10)
            probe.wait_until(lambda: bridge.count_subscribers('/joint_states') >= 1
                             and probe.node.count_publishers('/joint_states') >= 1, 10,
                             'the probe to match the bridge')
            port.link(bridge.link())
            with pytest.raises(ValueError, match='linked'):
                port.link(bridge.link())  # a second link would step the bridge twice
            bridge.clock_listeners.append(clock.feed)
            assert bridge.command_subscriptions == []
            period_ns = bridge.cfg.control_period_ns
            before = port.sync.latest_stamp()
            port.send_command(np.array([0.0, 0.0, -0.05]), 0.08)
            first = port.sync.wait_newer(before, 0.0)  # no wait: the step ran in send_command
            assert first is not None
            stamp = cm.stamp_ns(first['joint_states'].header.stamp)
            assert {cm.stamp_ns(first[k].header.stamp) for k in port.sync.kinds} == {stamp}
            assert owner.get_clock().now().nanoseconds == stamp
            probe.wait_until(lambda: any(cm.stamp_ns(m.header.stamp) == stamp
                                         for m in probe.messages('/joint_states')), 10,
                             "the linked step's joint state over DDS")
            assert any(cm.stamp_ns(m.clock) == stamp for m in probe.messages('/clock'))

            # the bridge's own spin (services) runs; a twist over DDS must not step it
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(bridge)
            spinner = threading.Thread(target=spin_lockstep, args=(bridge, executor, stop))
            spinner.start()
            probe.wait_until(lambda: bridge.count_publishers('/servo_node/delta_twist_cmds')
                             >= 1, 5, "the probe's twist publisher")
            pub.publish(cm.twist_msg(np.array([0.05, 0.0, 0.0]), 0))
            stop.wait(0.5)  # time enough for the old subscription to take it and step
            port.send_command(np.zeros(3), 0.08)
            second = port.sync.wait_newer(stamp, 0.0)
            assert second is not None
            assert cm.stamp_ns(second['joint_states'].header.stamp) == stamp + period_ns
            probe.wait_until(lambda: max(cm.stamp_ns(m.header.stamp)
                                                 for m in probe.messages('/joint_states'))
                             == stamp + period_ns, 10, 'the second step over DDS')
            clocks = {cm.stamp_ns(m.clock) for m in probe.messages('/clock')}
            assert stamp + 2 * period_ns not in clocks
    finally:
        stop.set()
        if spinner is not None:
            spinner.join(timeout=5)
        port.destroy()
        owner.destroy_node()
        bridge.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_a_realtime_bridge_and_a_pixel_port_refuse_a_link():
    """A realtime bridge steps on its timer; a pixel port needs the reset's image, which comes
    over DDS: both keep their topics, and say why."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    bridge = PyBulletBridge(context=ctx, parameter_overrides=[Parameter('mode', value='realtime')])
    owner = rclpy.create_node('policy_like', context=ctx)
    port = ArmPort(owner, '', 'pixels', 0, 'camera/video/image_raw', polled=True)
    try:
        with pytest.raises(ValueError, match='lockstep'):
            bridge.link()
        assert len(bridge.command_subscriptions) == 2  # nothing was torn down
        with pytest.raises(ValueError, match='pixels'):
            port.link(lambda grip, twist: {})
        assert port.sync.pump is not None  # still takes its state from the topics
    finally:
        port.destroy()
        owner.destroy_node()
        bridge.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_the_embedded_run_links_each_lockstep_arm_to_the_bridge_of_its_namespace():
    """What `selfalign train` does by default (`--no-link` skips it): the policy's port is
    linked to the bridge of its namespace; a realtime bridge in the same run is not."""
    from selfalign_bringup.cli import _link_in_process, build_parser
    from selfalign_policy.policy_node import PolicyNode

    assert build_parser().parse_args(['train']).no_link is False
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = {'pybullet_bridge': PyBulletBridge(context=ctx),
             'policy_node': PolicyNode(context=ctx, parameter_overrides=[
                 Parameter('task', value='touch'), Parameter('hidden_dim', value=32)])}
    other = PyBulletBridge(context=ctx, namespace='elsewhere',
                           parameter_overrides=[Parameter('mode', value='realtime')])
    try:
        linked = _link_in_process({**nodes, 'elsewhere/pybullet_bridge': other})
        assert linked == [nodes['pybullet_bridge']]
        port = nodes['policy_node'].port
        assert port.sync.pump is None and nodes['pybullet_bridge'].command_subscriptions == []
        assert len(other.command_subscriptions) == 2
        port.send_command(np.zeros(3), 0.08)  # the step's state is in the port at once
        first = port.sync.latest_stamp()
        port.send_command(np.zeros(3), 0.08)
        assert port.sync.latest_stamp() - first == nodes['pybullet_bridge'].cfg.control_period_ns
    finally:
        nodes['policy_node'].close()
        for node in (*nodes.values(), other):
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)
