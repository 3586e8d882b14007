"""The lockstep contract checks against a bridge started in a namespace (``__ns:=/arm_0``):
every topic and the reset service live under it, nothing at the root (issue: many arms)."""

from test_lockstep import *  # noqa: F401,F403 - the same checks, collected here again
from test_lockstep import DRIVER_MODE, DRIVER_PARAMS  # noqa: F401

DRIVER_NS = 'arm_0'


def test_nothing_of_the_contract_is_left_at_the_root(driver, probe):
    from selfalign_core import contract as C

    topics = dict(probe.topic_types())
    for name in (C.JOINT_STATES, C.EE_POSE, C.OBJECT_POSE, C.TWIST_CMD):
        assert f'/arm_0/{name}' in topics, sorted(topics)
        assert f'/{name}' not in topics or driver.ns == '', sorted(topics)
