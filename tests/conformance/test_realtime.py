"""Robot-contract conformance of a real-time driver (the hardware mode): rates, motion, timeout.

Runs against the PyBullet bridge started with ``mode: realtime``, or an external driver
(``SELFALIGN_DRIVER_EXTERNAL=1``; ``SELFALIGN_DRIVER_RATE_HZ`` its state rate, default 10;
``SELFALIGN_DRIVER_TIMEOUT_S`` its command timeout, default 0.5).  A real arm WILL MOVE: about
5 cm along +x and back, and the gripper closes and opens — clear the workspace first.
"""

import os
import threading
import time

from contract_checks import (
    check_state_messages,
    check_topic_types,
    record_all,
    STATE,
    wait_matched,
)
import numpy as np
import pytest

from selfalign_core import contract as C
from selfalign_core import contract_msgs as M

pytestmark = pytest.mark.ros

DRIVER_MODE = 'realtime'
# use_sim_time: the bridge's real-time timer must run on the wall clock, not on its own /clock.
DRIVER_PARAMS = {'control_rate_hz': 10.0, 'command_timeout_s': 0.3, 'seed': 1,
                 'use_sim_time': True}


def _rate(driver) -> float:
    return float(driver.params.get('control_rate_hz')
                 or os.environ.get('SELFALIGN_DRIVER_RATE_HZ', '10'))


def _timeout(driver) -> float:
    return float(driver.params.get('command_timeout_s')
                 or os.environ.get('SELFALIGN_DRIVER_TIMEOUT_S', '0.5'))


@pytest.fixture(scope='module')
def rig(driver, probe):
    topics = record_all(driver, probe, driver.camera and driver.process is None)
    twist = probe.publisher(type(M.twist_msg(np.zeros(3), 0)), driver.topic(C.TWIST_CMD))
    grip = probe.publisher(type(M.gripper_msg(0.0)), driver.topic(C.GRIPPER_CMD))
    wait_matched(twist)
    wait_matched(grip)
    probe.wait_until(lambda: all(probe.messages(t) for t in topics), 10.0, 'a first state')
    return driver, probe, topics, twist, grip


def ee_x(rig) -> float:
    driver, probe = rig[0], rig[1]
    return float(M.pose_arrays(probe.messages(driver.topic(C.EE_POSE))[-1])[0][0])


def stream_twist(rig, v, duration_s, rate_hz=20.0) -> None:
    """Send a twist at ``rate_hz`` for ``duration_s`` (a policy or servo teleop would)."""
    twist = rig[3]
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        twist.publish(M.twist_msg(np.asarray(v, float), 0))
        time.sleep(1.0 / rate_hz)


def test_topic_types(rig):
    driver, probe, *_ = rig
    check_topic_types(driver, probe, driver.camera and driver.process is None)


def test_rates_frames_and_stamps(rig):
    driver, probe, topics, *_ = rig
    rate = _rate(driver)
    n0 = {t: len(probe.messages(t)) for t in topics}
    t0 = time.monotonic()
    time.sleep(2.0)
    wall = time.monotonic() - t0
    for t in topics:
        msgs = probe.messages(t)[n0[t]:]
        measured = len(msgs) / wall
        assert 0.75 * rate <= measured <= 1.25 * rate, \
            f'{t}: {measured:.1f} Hz, expected {rate} Hz +-25 %'
        stamps = np.array([M.stamp_ns(m.header.stamp) for m in msgs]) * 1e-9
        assert np.all(np.diff(stamps) > 0), f'{t}: stamps not strictly increasing'
        # Stamps advance like the wall clock in real time (sim time or hardware time).
        span = stamps[-1] - stamps[0]
        expect = (len(msgs) - 1) / measured
        assert 0.7 * expect <= span <= 1.3 * expect, \
            f'{t}: stamps span {span:.2f} s over {expect:.2f} s of messages'
    check_state_messages(driver, {name: probe.messages(driver.topic(name))[-1]
                                  for name in STATE})


def test_plus_x_twist_moves_ee_plus_x_then_back(rig):
    driver, probe = rig[0], rig[1]
    time.sleep(_timeout(driver) + 0.3)
    x0 = ee_x(rig)
    p0 = M.pose_arrays(probe.messages(driver.topic(C.EE_POSE))[-1])[0]
    stream_twist(rig, (0.1, 0.0, 0.0), 0.6)
    time.sleep(0.2)
    p1 = M.pose_arrays(probe.messages(driver.topic(C.EE_POSE))[-1])[0]
    assert p1[0] - x0 > 0.025, f'0.6 s of +x at 0.1 m/s moved x by {p1[0] - x0:.4f} m'
    assert np.all(np.abs((p1 - p0)[1:]) < 0.01), f'off-axis motion {p1 - p0}'
    stream_twist(rig, (-0.1, 0.0, 0.0), 0.6)


def test_stale_commands_stop_the_arm(rig):
    driver = rig[0]
    timeout = _timeout(driver)
    # One single twist, never repeated: the driver may move for at most the timeout.
    time.sleep(timeout + 0.3)
    x0 = ee_x(rig)
    rig[3].publish(M.twist_msg(np.array([0.1, 0.0, 0.0]), 0))
    time.sleep(timeout + 1.0)
    x1 = ee_x(rig)
    bound = 0.1 * (timeout + 2.0 / _rate(driver)) + 0.01
    assert x1 - x0 < bound, f'one twist moved x by {x1 - x0:.3f} m > {bound:.3f} m: no timeout?'
    # A stream, then silence: after the timeout the arm holds still.
    stream_twist(rig, (0.1, 0.0, 0.0), 0.5)
    time.sleep(timeout + 0.3)
    x2 = ee_x(rig)
    time.sleep(1.0)
    x3 = ee_x(rig)
    assert abs(x3 - x2) < 0.005, f'arm kept moving {x3 - x2:.4f} m after the commands stopped'
    stream_twist(rig, (-0.1, 0.0, 0.0), 0.5 + (x1 - x0) / 0.1)


def test_gripper_command_changes_finger_width(rig):
    driver, probe, *_, grip = rig
    js = driver.topic(C.JOINT_STATES)
    w0 = M.finger_width(probe.messages(js)[-1])
    grip.publish(M.gripper_msg(0.0))
    probe.wait_until(lambda: M.finger_width(probe.messages(js)[-1]) < w0 - 0.03, 5.0,
                     'the fingers to close')
    grip.publish(M.gripper_msg(0.08))
    probe.wait_until(lambda: M.finger_width(probe.messages(js)[-1]) > w0 - 0.01, 5.0,
                     'the fingers to open')


def test_commands_from_two_threads_keep_the_driver_alive(rig):
    """Bursts of commands (two publishers' worth) must not wedge the driver's state output."""
    driver, probe, topics, twist, grip = rig
    n0 = len(probe.messages(topics[0]))
    workers = [threading.Thread(target=stream_twist, args=(rig, (0.0, 0.0, 0.0), 0.5, 200.0))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    time.sleep(0.5)
    assert len(probe.messages(topics[0])) - n0 >= 0.5 * _rate(driver)
    if driver.process is not None:
        assert driver.process.alive(), driver.process.output()
