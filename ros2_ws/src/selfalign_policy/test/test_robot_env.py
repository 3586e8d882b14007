"""StateSync: the lockstep wait for a full set of contract messages newer than the last step."""

import threading
import time

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState

from selfalign_core.contract_msgs import make_header
from selfalign_policy.robot_env import StateSync


def _msgs(stamp_ns: int) -> dict:
    js = JointState(header=make_header(stamp_ns))
    return {'joint_states': js, 'ee_pose': PoseStamped(header=make_header(stamp_ns)),
            'object_pose': PoseStamped(header=make_header(stamp_ns))}


def test_wait_newer_needs_every_kind_newer_and_times_out_otherwise():
    sync = StateSync()
    for k, m in _msgs(100).items():
        sync.put(k, m)
    assert sync.wait_newer(99, 0.01)['ee_pose'].header.stamp.nanosec == 100
    assert sync.wait_newer(100, 0.05) is None  # nothing newer than the last step
    new = _msgs(200)
    sync.put('joint_states', new['joint_states'])
    sync.put('ee_pose', new['ee_pose'])
    assert sync.wait_newer(100, 0.05) is None  # object pose still old: not a full set
    sync.put('object_pose', new['object_pose'])
    assert sync.wait_newer(100, 0.05) is not None and sync.latest_stamp() == 200


def test_wait_newer_wakes_when_another_thread_delivers():
    sync = StateSync()

    def later():
        time.sleep(0.1)
        for k, m in _msgs(5).items():
            sync.put(k, m)

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    got = sync.wait_newer(0, 5.0)
    assert got is not None and time.monotonic() - t0 < 2.0
