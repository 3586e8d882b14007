"""Real-time rehearsal timing model (pure): latency blend, jitter, drops, virtual-time delay."""

import numpy as np
import pytest

from selfalign_bringup.rehearsal import (
    CommandDelay,
    CommandTimeline,
    rehearsal_delay_s,
    RehearsalConfig,
)

T = 0.1


def test_timeline_blends_a_late_command_into_the_period_by_time():
    tl = CommandTimeline(RehearsalConfig(latency_s=0.05), T)
    tl.add(np.array([0.2, 0, 0]), 0.0, now_s=1.0)  # effective at 1.05
    v, w, newest = tl.integrate(1.0, 1.1)
    assert v[0] == pytest.approx(0.1)  # half the period old (zero), half new
    assert w == 0.0 and newest == pytest.approx(1.05)
    v, _, _ = tl.integrate(1.1, 1.2)
    assert v[0] == pytest.approx(0.2)


def test_timeline_without_faults_applies_the_command_for_the_rest_of_the_period():
    tl = CommandTimeline(RehearsalConfig(), T)
    v, w, newest = tl.integrate(0.0, 0.1)  # nothing yet: hold, gripper open
    assert not v.any() and w == 0.08 and newest is None
    tl.add(np.array([0, 0.3, 0]), 0.08, now_s=0.101)
    v, _, _ = tl.integrate(0.1, 0.2)
    assert v[1] == pytest.approx(0.3 * 0.99)


def test_timeline_long_tick_moves_further_and_orders_commands():
    tl = CommandTimeline(RehearsalConfig(), T)
    tl.add(np.array([0.1, 0, 0]), 0.08, now_s=0.0)
    v, _, _ = tl.integrate(0.0, 0.12)  # a 20 % late tick: 20 % more distance
    assert v[0] == pytest.approx(0.12)
    # jittered latency never reorders: a later command is never effective before an earlier
    tl = CommandTimeline(RehearsalConfig(latency_jitter_s=0.2, seed=3), T)
    times = [tl.add(np.zeros(3), 0.08, now_s=0.01 * k) for k in range(50)]
    assert times == sorted(times) and times[0] >= 0.0


def test_timeline_drops_are_seeded_and_at_the_configured_rate():
    def run(seed):
        tl = CommandTimeline(RehearsalConfig(drop_prob=0.3, seed=seed), T)
        return [tl.add(np.zeros(3), 0.08, now_s=k * T) is None for k in range(2000)]
    a = run(1)
    assert a == run(1) and a != run(2)
    assert 0.25 < np.mean(a) < 0.35


def test_period_jitter_bounds():
    tl = CommandTimeline(RehearsalConfig(period_jitter=0.2, seed=0), T)
    ps = [tl.next_period_s() for _ in range(500)]
    assert min(ps) >= 0.08 - 1e-12 and max(ps) <= 0.12 + 1e-12 and np.std(ps) > 0.005
    assert CommandTimeline(RehearsalConfig(), T).next_period_s() == T


def test_rehearsal_config_names_the_bad_field():
    with pytest.raises(ValueError, match='latency_s'):
        RehearsalConfig(latency_s=-0.1)
    with pytest.raises(ValueError, match='drop_prob'):
        RehearsalConfig(drop_prob=1.0)
    assert not RehearsalConfig().active and RehearsalConfig(latency_s=0.05).active


@pytest.mark.parametrize('delay', [0.0, 0.03, 0.05, 0.1, 0.17, 0.25])
def test_virtual_delay_matches_the_real_time_timeline(delay):
    """CommandDelay (one command per period) == CommandTimeline fed at the period boundaries."""
    rng = np.random.default_rng(0)
    d = CommandDelay(delay, T)
    tl = CommandTimeline(RehearsalConfig(latency_s=delay), T)
    for k in range(30):
        cmd = rng.uniform(-1, 1, 3)
        width = 0.0 if k % 4 < 2 else 0.08
        v1, w1 = d.push(cmd, width)
        tl.add(cmd, width, now_s=k * T)
        v2, w2, _ = tl.integrate(k * T, (k + 1) * T)
        assert np.allclose(v1, v2, atol=1e-9)
        if abs(delay / T - round(delay / T)) > 1e-9:  # at an exact boundary 'in force' differs
            assert w1 == w2


def test_zero_delay_is_the_identity_and_policy_phase_adds():
    d = CommandDelay(0.0, T)
    for k in range(5):
        v, w = d.push(np.array([k, 0.0, 0.0]), 0.0)
        assert v[0] == k and w == 0.0
    assert rehearsal_delay_s(0.05, 0.5, T, 0.002) == pytest.approx(0.102)
    with pytest.raises(ValueError, match='delay_s'):
        CommandDelay(-1.0, T)


@pytest.mark.ros
def test_realtime_bridge_applies_commands_only_after_the_injected_latency():
    """The bridge process in realtime mode with rehearsal_latency_s = 3 periods: the EE does
    not move on the ticks that follow the first twist, then moves (counted in ticks)."""
    from pathlib import Path
    import sys
    import threading
    import time

    from geometry_msgs.msg import PoseStamped, TwistStamped

    sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
    from selfalign_core import contract_msgs as cm
    from tests.rosproc import NodeProcess, TestNode

    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge', params={
        'mode': 'realtime', 'rehearsal_latency_s': 0.3, 'command_timeout_s': 1.0})
    with TestNode('rehearsal_probe') as probe:
        probe.record(PoseStamped, '/ee_pose', 100)
        pub = probe.publisher(TwistStamped, '/servo_node/delta_twist_cmds')
        stop = threading.Event()
        try:
            bridge.start()
            probe.wait_until(lambda: len(probe.messages('/ee_pose')) >= 3, 30, 'the bridge')
            n0 = len(probe.messages('/ee_pose'))
            start, _ = cm.pose_arrays(probe.messages('/ee_pose')[-1])

            def send():
                while not stop.is_set():
                    pub.publish(cm.twist_msg(np.array([0.0, 0.2, 0.0]), time.time_ns()))
                    time.sleep(0.02)
            threading.Thread(target=send, daemon=True).start()
            probe.wait_until(lambda: len(probe.messages('/ee_pose')) >= n0 + 8, 30, 'ticks')
        finally:
            stop.set()
            bridge.stop()
    ys = [cm.pose_arrays(m)[0][1] - start[1] for m in probe.messages('/ee_pose')[n0:n0 + 8]]
    moved = [k for k, y in enumerate(ys) if y > 0.002]
    assert moved, ys
    assert moved[0] >= 2, ys  # >= 2 whole ticks of 0.1 s without motion: the latency acted
