"""monitor_node as a real process: spec, episodes, reports become metrics, plots, MCAP."""

import threading
import time

from mcap_ros2.reader import read_ros2_messages
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import MarkerArray

from selfalign_bringup.rundir import RunDir
from selfalign_core.features import FEATURE_DIM
from selfalign_interfaces.msg import AlignmentReport, Episode, RewardSpec
from tests.rosproc import NodeProcess, TestNode

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.mark.ros
def test_monitor_writes_metrics_plots_and_recording(tmp_path):
    run = RunDir.create(tmp_path, 'push')
    run.write_config({'task': 'push'})
    with NodeProcess('selfalign_bringup', 'monitor_node',
                     params={'run_dir': str(run.path), 'plot_every_episodes': 2}) as proc, \
            TestNode('monitor_probe') as probe:
        markers = probe.record(MarkerArray, '/selfalign/markers')
        spec_pub = probe.node.create_publisher(RewardSpec, '/selfalign/reward_spec', LATCHED)
        ep_pub = probe.node.create_publisher(Episode, '/selfalign/episode', 10)
        rep_pub = probe.node.create_publisher(AlignmentReport, '/selfalign/alignment_report', 10)
        spec_pub.publish(RewardSpec(task='push', param_names=['w_push'], param_values=[2.0],
                                    param_lower=[0.1], param_upper=[100.0],
                                    param_scale=['log'], version=1, source='template:push'))
        # two subscribers per topic: the metrics callback and the raw recorder
        probe.wait_until(lambda: ep_pub.get_subscription_count() >= 2
                         and rep_pub.get_subscription_count() >= 2, 20, 'monitor subscriptions')
        probe.wait_until(lambda: [r['kind'] for r in run.read_metrics()] == ['reward_spec'], 20,
                         'the reward_spec row (before any episode: step 0)')
        for i in range(4):
            ep_pub.publish(Episode(task='push', episode_index=i, env_step=100 * (i + 1),
                                   success=i >= 2, rewards=[0.5, 0.5], evaluation=i == 3,
                                   num_steps=2, feature_dim=FEATURE_DIM,
                                   features=[0.1] * (2 * FEATURE_DIM)))
        rep_pub.publish(AlignmentReport(update_index=1, env_step=400, status='updated',
                                        param_names=['w_push'], theta_before=[2.0],
                                        theta_after=[12.5], kendall_tau_before=0.1,
                                        kendall_tau_after=0.9))
        probe.wait_until(lambda: len(run.read_metrics()) >= 6, 20, 'six metric rows')
        probe.wait_until(lambda: any('w_push=2' in m.text for a in probe.messages(
            '/selfalign/markers') for m in a.markers), 20, 'status text with theta')
        time.sleep(0.2)
        assert markers, proc.output()
    rows = run.read_metrics()
    kinds = sorted(r['kind'] for r in rows)  # no ordering across topics
    assert kinds == ['alignment', 'episode', 'episode', 'episode', 'eval', 'reward_spec']
    spec = next(r for r in rows if r['kind'] == 'reward_spec')  # θ at step 0, for the plot
    assert (spec['env_step'], spec['version'], spec['theta.w_push']) == ('0', '1', '2')
    assert run.read_params() == {'w_push': {'lower': 0.1, 'upper': 100.0, 'scale': 'log',
                                            'initial': 2.0}}
    alignment = next(r for r in rows if r['kind'] == 'alignment')
    assert alignment['theta.w_push'] == '12.5'
    assert [r['success'] for r in rows if r['kind'] == 'episode'] == ['0', '0', '1']
    assert (run.plots_dir / 'success.png').exists() and (run.plots_dir / 'theta.png').exists()
    recorded = [m.channel.topic for m in read_ros2_messages(str(run.recording_path))]
    assert recorded.count('/selfalign/episode') == 4
    assert '/selfalign/reward_spec' in recorded
    assert (run.path / 'videos' / 'eval-400-0.mp4').stat().st_size > 0  # eval episodes only
    assert len(list((run.path / 'videos').glob('*.mp4'))) == 1


@pytest.mark.ros
def test_a_killed_monitors_recording_is_readable_after_the_run_resumes(tmp_path):
    import signal

    from selfalign_bringup.monitor_node import FLUSH_EVERY_S

    run = RunDir.create(tmp_path, 'push')
    run.write_config({'task': 'push'})
    with TestNode('kill_probe') as probe:
        ep_pub = probe.node.create_publisher(Episode, '/selfalign/episode', 10)
        with NodeProcess('selfalign_bringup', 'monitor_node',
                         params={'run_dir': str(run.path)}) as proc:
            probe.wait_until(lambda: ep_pub.get_subscription_count() >= 2, 20,
                             'monitor subscriptions')
            for i in range(5):
                ep_pub.publish(Episode(task='push', episode_index=i, env_step=100 * (i + 1),
                                       rewards=[0.5], num_steps=1, feature_dim=FEATURE_DIM,
                                       features=[0.1] * FEATURE_DIM))
            probe.wait_until(lambda: len(run.read_metrics()) >= 5, 20, 'five rows')
            time.sleep(FLUSH_EVERY_S + 1.0)  # one flush after the episodes
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait(timeout=10)
        with NodeProcess('selfalign_bringup', 'monitor_node',
                         params={'run_dir': str(run.path)}) as resumed:
            probe.wait_until(lambda: 'left open by a killed process' in resumed.output(), 20,
                             'the recovery of the first part')
    episodes = [m for m in read_ros2_messages(str(run.recording_path))
                if m.channel.topic == '/selfalign/episode']
    assert [m.ros_msg.episode_index for m in episodes] == [0, 1, 2, 3, 4]
    assert (run.path / 'recording-1.mcap').is_file()  # the resumed part, its own file


@pytest.mark.ros
def test_per_step_topics_are_taken_off_the_executor(tmp_path):
    """Every env step publishes the state (and records it): as executor callbacks each was a
    wake-up of the shared executor in the embedded run, which rebuilds its wait set over all
    nodes (docs/performance.md). The monitor and the policy take them on their own threads."""
    import rclpy

    from selfalign_bringup.monitor_node import MonitorNode
    from selfalign_policy.policy_node import PolicyNode

    per_step = {'/joint_states', '/ee_pose', '/ee_wrench', '/object_pose',
                '/servo_node/delta_twist_cmds', '/gripper_controller/commands', '/clock'}
    run = RunDir.create(tmp_path, 'touch')
    rclpy.init()
    try:
        monitor = MonitorNode()  # markers only (no run directory)
        recording = MonitorNode(parameter_overrides=[
            rclpy.parameter.Parameter('run_dir', value=str(run.path))])
        policy = PolicyNode()
        try:
            for node in (monitor, recording, policy):
                callbacks = {s.topic_name for s in node.subscriptions}
                assert not callbacks & per_step, (node.get_name(), callbacks & per_step)
            assert {t for t, _ in recording._recorded} >= per_step - {'/clock'}
            assert all(port._polled for port in policy.ports)
        finally:
            for node in (monitor, recording, policy):
                node.close()
                node.destroy_node()
    finally:
        rclpy.try_shutdown()


@pytest.mark.ros
def test_markers_are_built_only_while_someone_subscribes(tmp_path):
    """Without rviz the 10 Hz markers cost nothing (in the embedded run their Python held the
    GIL the learner needs); an rviz that connects later still gets the recent trail."""
    from geometry_msgs.msg import PoseStamped
    import rclpy

    from selfalign_bringup.monitor_node import MonitorNode

    rclpy.init()
    try:
        monitor = MonitorNode()
        probe = rclpy.create_node('marker_probe')
        executor = rclpy.executors.MultiThreadedExecutor()
        for node in (monitor, probe):
            executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        try:
            pub = probe.create_publisher(PoseStamped, '/ee_pose',
                                         rclpy.qos.qos_profile_sensor_data)
            deadline = time.monotonic() + 20
            while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            for i in range(20):
                msg = PoseStamped()
                msg.pose.position.x = 0.01 * i
                pub.publish(msg)
            time.sleep(0.5)  # five marker periods with nobody listening
            assert len(monitor._trail) == 0  # nothing taken, nothing built
            got = []
            probe.create_subscription(MarkerArray, '/selfalign/markers', got.append, 10)
            deadline = time.monotonic() + 20
            while not any(m.id == 2 for a in got for m in a.markers) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            trail = next(m for a in got for m in a.markers if m.id == 2)
            assert [p.x for p in trail.points] == pytest.approx([0.01 * i for i in range(20)])
        finally:
            executor.shutdown()
            monitor.close()
            monitor.destroy_node()
            probe.destroy_node()
    finally:
        rclpy.try_shutdown()


@pytest.mark.ros
def test_the_recorder_writes_per_step_topics_in_batches(tmp_path):
    """Each wake-up of the recorder's thread takes the GIL (in the embedded run, from the
    learner): it wakes once per RECORD_BATCH_S for whatever arrived, not once per message, and
    loses none of a 1 kHz stream."""
    import rclpy
    from sensor_msgs.msg import JointState

    from selfalign_bringup.monitor_node import MonitorNode, RECORD_BATCH_S

    run = RunDir.create(tmp_path, 'touch')
    rclpy.init()
    try:
        monitor = MonitorNode(parameter_overrides=[
            rclpy.parameter.Parameter('run_dir', value=str(run.path))])
        probe = rclpy.create_node('record_probe')
        try:
            pub = probe.create_publisher(JointState, '/joint_states', 10)  # a bridge's QoS
            deadline = time.monotonic() + 20
            while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            n, period_s = 200, 0.001
            t0 = time.monotonic()
            for i in range(n):
                pub.publish(JointState(name=['j'], position=[float(i)]))
                time.sleep(period_s)
            elapsed = time.monotonic() - t0
            time.sleep(3 * RECORD_BATCH_S)
            wakeups = monitor.record_wakeups
        finally:
            monitor.close()
            monitor.destroy_node()
            probe.destroy_node()
    finally:
        rclpy.try_shutdown()
    positions = [m.ros_msg.position[0] for m in read_ros2_messages(str(run.recording_path))
                 if m.channel.topic == '/joint_states']
    assert positions == [float(i) for i in range(n)]
    # one wake-up per batch period (plus the first and the last); per message it was ~n
    assert wakeups <= elapsed / RECORD_BATCH_S + 3, (wakeups, elapsed)
