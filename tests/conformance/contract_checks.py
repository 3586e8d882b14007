"""Checks shared by the lockstep and real-time conformance modules (any driver, any mode)."""

from __future__ import annotations

import time
from typing import Any

from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray

from selfalign_core import contract as C
from selfalign_core import contract_msgs as M

#: Contract state topics and their message types.
STATE = {C.JOINT_STATES: JointState, C.EE_POSE: PoseStamped, C.EE_WRENCH: WrenchStamped,
         C.OBJECT_POSE: PoseStamped}
CAMERA = {C.CAMERA_IMAGE: Image, C.CAMERA_INFO: CameraInfo}
COMMANDS = {C.TWIST_CMD: TwistStamped, C.GRIPPER_CMD: Float64MultiArray}
#: Posed topics and the frame each must be in.
FRAMES = {C.EE_POSE: C.BASE_FRAME, C.EE_WRENCH: C.BASE_FRAME, C.OBJECT_POSE: C.BASE_FRAME}


def type_name(msg_type: type) -> str:
    """geometry_msgs.msg.PoseStamped -> 'geometry_msgs/msg/PoseStamped'."""
    return f'{msg_type.__module__.split(".")[0]}/msg/{msg_type.__name__}'


def check_topic_types(driver, probe, camera: bool) -> None:
    """Every contract topic exists with exactly the contract type; the driver subscribes to the
    command topics with the contract types."""
    expected = dict(STATE)
    if camera:
        expected.update(CAMERA)
        probe.wait_for_topics([driver.topic(t) for t in CAMERA], timeout_s=10.0)
    graph = probe.topic_types()
    for topic, msg_type in expected.items():
        name = driver.topic(topic)
        assert name in graph, f'{name} missing from the graph (have {sorted(graph)})'
        assert graph[name] == [type_name(msg_type)], \
            f'{name} has type {graph[name]}, the contract says {type_name(msg_type)}'
    for topic, msg_type in COMMANDS.items():
        name = driver.topic(topic)
        subs = probe.node.get_subscriptions_info_by_topic(name)
        assert subs, f'nobody subscribes to {name}: the driver must take {type_name(msg_type)}'
        types = {s.topic_type for s in subs}
        assert type_name(msg_type) in types, f'{name} is subscribed as {types}'


def check_state_messages(driver, msgs: dict) -> None:
    """Frames, joint names and finger fields of one message per state topic."""
    for topic, frame in FRAMES.items():
        got = msgs[topic].header.frame_id
        assert got == frame, f'{driver.topic(topic)} frame_id {got!r}, contract: {frame!r}'
    js = msgs[C.JOINT_STATES]
    for joint in C.FINGER_JOINTS:
        assert joint in js.name, f'{joint} missing from joint_states names {list(js.name)}'
    assert len(js.position) == len(js.name), 'joint_states: one position per name'
    width = M.finger_width(js)
    assert 0.0 <= width <= 0.1, f'finger width {width} m outside [0, 0.1]'
    for topic in (C.EE_POSE, C.OBJECT_POSE):
        q = M.pose_arrays(msgs[topic])[1]
        assert abs(float((q ** 2).sum()) - 1.0) < 1e-3, f'{topic} quaternion not unit: {q}'
    for topic, m in msgs.items():
        assert M.stamp_ns(m.header.stamp) > 0, f'{driver.topic(topic)} has a zero stamp'


def record_all(driver, probe, camera: bool) -> list[str]:
    """Subscribe (reliable, so a best-effort publisher would not match) to every state topic."""
    topics = dict(STATE)
    if camera:
        topics.update(CAMERA)
    names = []
    for topic, msg_type in topics.items():
        probe.record(msg_type, driver.topic(topic), 100)
        names.append(driver.topic(topic))
    probe.record(Clock, driver.topic(C.CLOCK), 100)
    return names


def wait_quiet(probe: Any, topics: list[str], quiet_s: float = 0.3,
               timeout_s: float = 5.0) -> dict[str, int]:
    """Wait until no new message arrived on ``topics`` for ``quiet_s``; returns the counts."""
    deadline = time.monotonic() + timeout_s
    counts = {t: len(probe.messages(t)) for t in topics}
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = {t: len(probe.messages(t)) for t in topics}
        if now != counts:
            counts, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return counts
    raise TimeoutError(f'topics {topics} kept publishing for {timeout_s} s (not lockstep?)')


def wait_matched(publisher: Any, timeout_s: float = 10.0) -> None:
    """Wait until a publisher has at least one matched subscription (the driver's)."""
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f'no subscriber on {publisher.topic_name} after {timeout_s} s; '
                               'the driver must subscribe to the contract command topics')
        time.sleep(0.02)
