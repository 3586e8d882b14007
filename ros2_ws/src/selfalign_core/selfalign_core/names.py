"""Every topic and service name of selfalign, in one place (no rclpy).

Names are relative (the nav2 convention), so a node started under a namespace (``__ns:=/arm_0``,
``ros2 launch ... namespace:=arm_0``) finds its peers there, and a remap rule can move any of
them. In the root namespace they resolve to ``/joint_states``, ``/selfalign/episode``, ...
``CLOCK`` stays absolute: ROS time sources listen on ``/clock``.
"""

# --- the robot contract (what a driver offers and accepts; docs/bring_your_own_arm.md) ---
JOINT_STATES = 'joint_states'
EE_POSE = 'ee_pose'
EE_WRENCH = 'ee_wrench'
OBJECT_POSE = 'object_pose'
CAMERA_IMAGE = 'camera/image_raw'
CAMERA_INFO = 'camera/camera_info'
#: optional: frames of a viewer camera, for evaluation videos and key frames (any size)
VIDEO_IMAGE = 'camera/video/image_raw'
TWIST_CMD = 'servo_node/delta_twist_cmds'
GRIPPER_CMD = 'gripper_controller/commands'
RESET_EPISODE = 'selfalign/reset_episode'
GOAL_POSE = 'selfalign/goal_pose'
CLOCK = '/clock'


def worker_name(i: int) -> str:
    """Namespace of worker ``i`` of a run with several arms (``workers:=N``): the contract of
    arm i lives at ``arm_i/joint_states``, ... relative to the run's namespace."""
    return f'arm_{int(i)}'


def under(worker: str, name: str) -> str:
    """``name`` as worker ``worker`` ('' or e.g. 'arm_1') sees it: a relative name moves
    under the worker's namespace, an absolute one stays where it is."""
    return name if not worker or name.startswith('/') else f'{worker}/{name}'


# --- selfalign topics ---
REWARD_SPEC = 'selfalign/reward_spec'
#: a reward template someone proposes by hand (reward_node validates and adopts it)
REWARD_PROPOSAL = 'selfalign/reward_proposal'
EPISODE = 'selfalign/episode'
ALIGNMENT_REPORT = 'selfalign/alignment_report'
POLICY_STATS = 'selfalign/policy_stats'
LLM_USAGE = 'selfalign/llm_usage'
MARKERS = 'selfalign/markers'
ESTOP = 'selfalign/estop'

# --- selfalign services ---
PROPOSE_REWARD = 'selfalign/propose_reward'
RANK_TRAJECTORIES = 'selfalign/rank_trajectories'
ANALYZE_FAILURE = 'selfalign/analyze_failure'
SET_REWARD_PARAMS = 'selfalign/set_reward_params'
ESTOP_RELEASE = 'selfalign/estop_release'
