"""Deployment safety layer (pure): e-stop latch, watchdog, speed, workspace, gripper force,
and the inference-only policy loaded from a real trainer checkpoint."""

import numpy as np
import pytest
import torch

from selfalign_policy.config import DrQV2Config
from selfalign_policy.safety import (
    DeployedPolicy,
    ObservationWatchdog,
    RobotState,
    SafetyConfig,
    SafetyLayer,
)
from selfalign_policy.trainer import Trainer

CENTRE = RobotState(np.array([0.5, 0.0, 0.2]), 0.08, np.zeros(2))


def test_estop_latches_until_released_and_sends_no_gripper_command():
    s = SafetyLayer(SafetyConfig())
    assert not s.filter(np.array([0.1, 0, 0]), 0.0, CENTRE, 0.0).stopped
    s.engage_estop()
    for _ in range(3):  # latched: a later 'good' command does not move the arm
        cmd = s.filter(np.array([0.1, 0.1, 0.0]), 0.0, CENTRE, 0.0)
        assert cmd.stopped and cmd.reasons == ('estop',)
        assert np.array_equal(cmd.velocity_mps, np.zeros(3)) and cmd.finger_width_m is None
    s.release_estop()
    cmd = s.filter(np.array([0.1, 0, 0]), 0.0, CENTRE, 0.0)
    assert not cmd.stopped and cmd.velocity_mps[0] == pytest.approx(0.1)
    assert s.interventions['estop'] == 3


def test_stale_or_missing_observation_stops_the_arm():
    s = SafetyLayer(SafetyConfig(observation_timeout_s=0.3))
    v = np.array([0.0, 0.2, 0.0])
    assert not s.filter(v, 0.08, CENTRE, 0.29).stopped
    for age, state in ((0.31, CENTRE), (None, CENTRE), (0.0, None), (float('nan'), CENTRE)):
        cmd = s.filter(v, 0.08, state, age)
        assert cmd.stopped and cmd.reasons == ('stale',)
        assert not cmd.velocity_mps.any()


def test_speed_cap_keeps_direction_and_nonfinite_becomes_zero():
    s = SafetyLayer(SafetyConfig(max_ee_speed_mps=0.3))
    cmd = s.filter(np.array([3.0, 4.0, 0.0]), 0.08, CENTRE, 0.0)
    assert np.allclose(cmd.velocity_mps, [0.18, 0.24, 0.0]) and 'speed' in cmd.reasons
    cmd = s.filter(np.array([np.nan, 0.1, 0.0]), 0.08, CENTRE, 0.0)
    assert not cmd.velocity_mps.any() and 'nonfinite' in cmd.reasons


def test_workspace_box_limits_one_period_ahead_and_always_lets_the_arm_back_in():
    cfg = SafetyConfig(workspace_low_m=(0.3, -0.3, 0.015), workspace_high_m=(0.75, 0.3, 0.4),
                       control_period_s=0.1)
    s = SafetyLayer(cfg)
    near_top = RobotState(np.array([0.5, 0.0, 0.39]), 0.08, np.zeros(2))
    cmd = s.filter(np.array([0.0, 0.0, 0.3]), 0.08, near_top, 0.0)
    assert cmd.velocity_mps[2] == pytest.approx(0.1)  # 1 cm left in 0.1 s
    assert 'workspace' in cmd.reasons
    outside = RobotState(np.array([0.5, 0.0, 0.45]), 0.08, np.zeros(2))
    assert s.filter(np.array([0.0, 0.0, 0.2]), 0.08, outside, 0.0).velocity_mps[2] == 0.0
    assert s.filter(np.array([0.0, 0.0, -0.2]), 0.08, outside, 0.0).velocity_mps[2] == -0.2
    # the predicted position never leaves the box from inside, for random commands
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(cfg.workspace_low_m, cfg.workspace_high_m)
        v = rng.uniform(-1, 1, 3)
        out = s.filter(v, 0.08, RobotState(p, 0.08, np.zeros(2)), 0.0).velocity_mps
        nxt = p + out * cfg.control_period_s
        assert np.all(nxt >= np.array(cfg.workspace_low_m) - 1e-9)
        assert np.all(nxt <= np.array(cfg.workspace_high_m) + 1e-9)
        assert np.linalg.norm(out) <= cfg.max_ee_speed_mps + 1e-9


def test_gripper_stops_closing_above_the_force_limit_but_may_open():
    s = SafetyLayer(SafetyConfig(max_gripper_force_n=10.0))
    squeezing = RobotState(np.array([0.5, 0.0, 0.1]), 0.05, np.array([12.0, 3.0]))
    cmd = s.filter(np.zeros(3), 0.0, squeezing, 0.0)
    assert cmd.finger_width_m == pytest.approx(0.05) and 'gripper_force' in cmd.reasons
    assert s.filter(np.zeros(3), 0.08, squeezing, 0.0).finger_width_m == 0.08
    gentle = RobotState(np.array([0.5, 0.0, 0.1]), 0.05, np.array([8.0, 8.0]))
    assert s.filter(np.zeros(3), 0.0, gentle, 0.0).finger_width_m == 0.0


def test_safety_config_names_the_bad_field():
    with pytest.raises(ValueError, match='workspace_low_m'):
        SafetyConfig(workspace_low_m=(0.8, 0, 0), workspace_high_m=(0.7, 1, 1))
    with pytest.raises(ValueError, match='observation_timeout_s'):
        SafetyConfig(observation_timeout_s=0.05, control_period_s=0.1)
    with pytest.raises(ValueError, match='max_ee_speed_mps'):
        SafetyConfig(max_ee_speed_mps=0.0)


def test_watchdog_ages_on_silence_and_on_a_frozen_stamp():
    w = ObservationWatchdog(('joint_states', 'ee_pose'))
    w.put('joint_states', 1, now_s=10.0)
    assert w.age_s(10.0) is None  # ee_pose never came
    w.put('ee_pose', 1, now_s=10.05)
    assert w.age_s(10.1) == pytest.approx(0.1)
    w.put('joint_states', 2, now_s=10.2)
    w.put('ee_pose', 1, now_s=10.2)  # same stamp again: a frozen pipeline does not count
    assert w.age_s(10.3) == pytest.approx(0.25)


class _StateEnv:
    """Smallest env the trainer accepts, to produce a real checkpoint quickly."""

    def __init__(self):
        from gymnasium import spaces

        from selfalign_core import features as F
        self.observation_space = spaces.Box(-np.inf, np.inf, (F.OBS_DIM,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._rng = np.random.default_rng(0)
        self._F = F
        self._t = 0

    def reset(self, seed=None, options=None):
        self._t = 0
        return self._rng.normal(size=self._F.OBS_DIM).astype(np.float32), {}

    def step(self, action):
        obs = self._rng.normal(size=self._F.OBS_DIM).astype(np.float32)
        info = {'features': np.zeros(self._F.FEATURE_DIM, np.float32)}
        self._t += 1
        return obs, 0.0, False, self._t >= 8, info


def test_deployed_policy_is_the_deterministic_actor_of_the_checkpoint(tmp_path):
    torch.set_num_threads(1)
    cfg = DrQV2Config.from_dict({'agent': {'hidden_dim': 16, 'batch_size': 8,
                                           'num_expl_steps': 4, 'feature_dim': 8},
                                 'replay': {'capacity': 64},
                                 'trainer': {'progress': False, 'eval_every_steps': 0}})
    trainer = Trainer(_StateEnv(), cfg, lambda x: np.zeros(len(x), np.float32))
    trainer.train(24)  # a few real updates so the actor is not at its init
    path = trainer.save(tmp_path / 'checkpoint.pt')
    policy = DeployedPolicy(path)
    rng = np.random.default_rng(1)
    for _ in range(5):
        obs = rng.normal(size=policy.obs_shape).astype(np.float32)
        a = policy.act(obs)
        expect = trainer.agent.act(obs, step=0, eval_mode=True)  # step 0: would be uniform
        assert np.array_equal(a, expect)
        assert np.array_equal(policy.act(obs), a)  # no noise: same obs, same action
    with pytest.raises(ValueError, match='obs mode'):
        policy.act(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match='checkpoint'):
        torch.save({'x': 1}, tmp_path / 'bad.pt')
        DeployedPolicy(tmp_path / 'bad.pt')
