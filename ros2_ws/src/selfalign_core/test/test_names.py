"""Names of a worker's contract (workers:=N)."""

from selfalign_core import names as N


def test_a_workers_relative_names_move_under_it_and_absolute_ones_stay():
    assert N.under('arm_1', N.JOINT_STATES) == 'arm_1/joint_states'
    assert N.under('arm_1', N.RESET_EPISODE) == 'arm_1/selfalign/reset_episode'
    assert N.under('', N.JOINT_STATES) == 'joint_states'   # a single arm: its own names
    # a user's absolute topic (e.g. key_frames_topic:=/cam/image) is not put under the arm
    assert N.under('arm_1', '/cam/image') == '/cam/image'
    assert N.under(N.worker_name(2), 'ee_pose') == 'arm_2/ee_pose'
