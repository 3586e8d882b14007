"""The QoS profiles selfalign uses, defined once."""

from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy

#: The reward spec, the goal, the LLM usage: the last message waits for late joiners.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Commands and state of the robot contract (what ros2_control and MoveIt Servo expect).
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
#: Subscribing to sensors (REP-2003): best effort, matches reliable and best-effort publishers.
SENSOR = qos_profile_sensor_data
