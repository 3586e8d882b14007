"""MCAP recording: schemas rosbag2-compatible, messages decodable by the standard mcap reader."""

from geometry_msgs.msg import PoseStamped
from mcap_ros2.reader import read_ros2_messages
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState

from selfalign_bringup.recording import schema_text, TopicRecorder


def test_schema_includes_nested_definitions_once():
    text = schema_text('geometry_msgs/msg/PoseStamped')
    assert text.startswith('# A Pose with reference coordinate frame and timestamp')
    for dep in ('std_msgs/Header', 'geometry_msgs/Pose', 'geometry_msgs/Point',
                'geometry_msgs/Quaternion', 'builtin_interfaces/Time'):
        assert text.count(f'MSG: {dep}\n') == 1, dep


def test_recorded_messages_decode_with_standard_reader(tmp_path):
    rec = TopicRecorder(tmp_path / 'run.mcap')
    rec.add_topic('/ee_pose', 'geometry_msgs/msg/PoseStamped')
    rec.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
    for i in range(5):
        pose = PoseStamped()
        pose.header.frame_id = 'base_link'
        pose.pose.position.x = 0.1 * i
        rec.write('/ee_pose', serialize_message(pose), log_time_ns=1000 + i)
        js = JointState(name=['panda_finger_joint1'], position=[0.01 * i])
        rec.write('/joint_states', serialize_message(js), log_time_ns=1000 + i)
    rec.close()
    msgs = list(read_ros2_messages(str(tmp_path / 'run.mcap')))
    poses = [m.ros_msg for m in msgs if m.channel.topic == '/ee_pose']
    joints = [m.ros_msg for m in msgs if m.channel.topic == '/joint_states']
    assert [round(p.pose.position.x, 6) for p in poses] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert poses[0].header.frame_id == 'base_link'
    assert joints[-1].position[0] == 0.04 and rec.count == 10


def test_a_file_left_open_by_a_kill_is_recovered_up_to_its_last_flush(tmp_path):
    import shutil

    from std_msgs.msg import String

    from selfalign_bringup.recording import is_complete, recover

    rec = TopicRecorder(tmp_path / 'live.mcap')
    rec.add_topic('/t', 'std_msgs/msg/String')
    for i in range(300):
        rec.write('/t', serialize_message(String(data=f'm{i}')), log_time_ns=i)
    rec.flush()
    for i in range(300, 310):  # after the flush: still in the writer's chunk buffer
        rec.write('/t', serialize_message(String(data=f'm{i}')), log_time_ns=i)
    killed = tmp_path / 'killed.mcap'
    shutil.copy(tmp_path / 'live.mcap', killed)  # the bytes a SIGKILL would leave
    rec.close()
    assert not is_complete(killed) and is_complete(tmp_path / 'live.mcap')
    try:
        list(read_ros2_messages(str(killed)))
        readable = True
    except Exception:  # noqa: BLE001 - mcap raises its own errors on a cut-off file
        readable = False
    assert not readable
    assert recover(killed) == 300
    assert is_complete(killed) and not list(tmp_path.glob('*.recovering'))
    msgs = [m.ros_msg.data for m in read_ros2_messages(str(killed))]
    assert msgs == [f'm{i}' for i in range(300)]
    assert recover(killed) == -1  # complete files are left alone
