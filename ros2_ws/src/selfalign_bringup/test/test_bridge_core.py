"""Tests of the bridge's pure logic on the real PyBullet world (no ROS graph).

Also checks the ROS route's observation equals the gym env's: BridgeCore -> contract messages ->
ObservationBuilder gives the same observation as ``SelfAlignEnv`` for the same seed and actions.
"""

import os
from pathlib import Path
import signal
import subprocess
import time

import numpy as np
import pytest

from selfalign_bringup.bridge_core import (
    BridgeConfig,
    BridgeCore,
    CommandSafety,
    fingertip_wrench,
    with_overrides,
)
from selfalign_bringup.sim import PandaWorld, SimConfig
from selfalign_bringup.sim.envs import SelfAlignEnv
from selfalign_core import contract_msgs as M
from selfalign_core.contract import action_to_command
from selfalign_core.observation import ObservationBuilder


def make_core(**kw):
    cfg = BridgeConfig(**kw)
    world = PandaWorld(with_overrides(SimConfig(), cfg.sim_overrides()))
    return BridgeCore(world, cfg)


@pytest.fixture
def lockstep():
    core = make_core()
    core.reset(0)
    yield core
    core.world.close()


@pytest.mark.parametrize('name,value', [
    ('task', 'fly'), ('mode', 'sometimes'), ('control_rate_hz', 0.0),
    ('control_rate_hz', float('nan')), ('command_timeout_s', -1.0), ('image_size_px', 4),
    ('max_ee_speed_mps', 5.0), ('gripper_max_width_m', 0.0),
    ('ee_workspace_low_m', (0.3, 0.0)), ('ee_workspace_low_m', (0.8, -0.3, 0.015)),
])
def test_bad_parameter_is_named(name, value):
    with pytest.raises(ValueError, match=name):
        BridgeConfig(**{name: value})


def test_realtime_timeout_must_cover_a_period():
    with pytest.raises(ValueError, match='command_timeout_s'):
        BridgeConfig(mode='realtime', control_rate_hz=10.0, command_timeout_s=0.05)
    with pytest.raises(ValueError, match='unknown bridge parameter'):
        BridgeConfig.from_dict({'speed': 1.0})
    cfg = BridgeConfig.from_dict({'ee_workspace_low_m': [0.3, -0.3, 0.02]})
    assert cfg.ee_workspace_low_m == (0.3, -0.3, 0.02)
    assert cfg.control_period_ns == 100_000_000


def test_command_safety_speed_workspace_width():
    s = CommandSafety(BridgeConfig(max_ee_speed_mps=0.3))
    v = s.velocity(np.array([0.6, 0.8, 0.0]), None)
    np.testing.assert_allclose(v, [0.18, 0.24, 0.0])  # direction kept, norm capped
    np.testing.assert_array_equal(s.velocity(np.array([np.nan, 0, 0]), None), np.zeros(3))
    # 1 cm below the top (z high = 0.40): at most 0.1 m/s up in a 0.1 s period; down is free.
    np.testing.assert_allclose(s.velocity(np.array([0, 0, 0.3]), np.array([0.5, 0, 0.39])),
                               [0, 0, 0.1], atol=1e-12)
    np.testing.assert_allclose(s.velocity(np.array([0, 0, -0.3]), np.array([0.5, 0, 0.39])),
                               [0, 0, -0.3])
    # Already outside the box: no further out, but holding or coming back are allowed.
    np.testing.assert_allclose(s.velocity(np.array([0.2, 0, 0]), np.array([0.9, 0, 0.2])),
                               [0, 0, 0])
    np.testing.assert_allclose(s.velocity(np.array([-0.2, 0, 0]), np.array([0.9, 0, 0.2])),
                               [-0.2, 0, 0])
    assert s.width(0.5) == 0.08 and s.width(-1.0) == 0.0 and s.width(0.03) == 0.03
    with pytest.raises(ValueError, match='finite'):
        s.width(float('nan'))


def test_lockstep_one_period_per_twist(lockstep):
    core = lockstep
    t0, x0 = core.stamp_ns, core.last.result.raw['ee_pos'].copy()
    assert core.tick(0.0) is None  # no timer steps in lockstep
    for k in range(1, 6):
        s = core.on_twist(np.array([0.2, 0.0, 0.0]), now_s=0.0)
        assert s is not None and s.stamp_ns == t0 + k * core.period_ns
    dx = core.last.result.raw['ee_pos'] - x0
    assert 0.06 < dx[0] < 0.11, dx  # 5 x 0.1 s at 0.2 m/s = 0.10 m (arm lags a little)
    assert abs(dx[1]) < 0.01 and abs(dx[2]) < 0.01


def test_gripper_latched_and_applied_with_next_twist(lockstep):
    core = lockstep
    w0 = core.last.result.raw['finger_width']
    core.on_gripper(0.0)
    assert core.last.result.raw['finger_width'] == w0  # latched only
    for _ in range(5):
        s = core.on_twist(np.zeros(3), 0.0)
    assert s.finger_width_m == 0.0
    assert s.result.raw['finger_width'] < w0 - 0.03


def test_reset_seeds_and_monotonic_clock():
    core = make_core(seed=7)
    try:
        a = core.reset(-1)
        assert core.episode_seed == 7
        core.on_twist(np.array([0.1, 0, 0]), 0.0)
        b = core.reset(-1)
        assert core.episode_seed == 8 and b.stamp_ns == a.stamp_ns + 2 * core.period_ns
        c = core.reset(7)
        np.testing.assert_array_equal(c.result.raw['block_pos'], a.result.raw['block_pos'])
        assert not np.array_equal(b.result.raw['block_pos'], a.result.raw['block_pos'])
    finally:
        core.world.close()


def test_realtime_stale_twist_holds_the_arm():
    core = make_core(mode='realtime', command_timeout_s=0.3)
    try:
        core.reset(0)
        assert core.on_twist(np.array([0.2, 0, 0]), now_s=100.0) is None  # only latched
        x0 = core.last.result.raw['ee_pos'][0]
        fresh = [core.tick(100.0 + 0.1 * k) for k in range(3)]
        assert not any(s.stale for s in fresh)
        x1 = core.last.result.raw['ee_pos'][0]
        assert x1 - x0 > 0.03
        stale = [core.tick(100.5 + 0.1 * k) for k in range(5)]
        assert all(s.stale for s in stale)
        assert all(np.all(s.velocity_mps == 0) for s in stale)
        x2 = core.last.result.raw['ee_pos'][0]
        # Arm holds: only the residual lag of the position controller, no commanded motion.
        assert abs(x2 - x1) < 0.015
    finally:
        core.world.close()


def test_fingertip_wrench_along_pad_axis():
    raw = {'ee_quat': np.array([1.0, 0, 0, 0]), 'force_left': 0.5, 'force_right': 0.0}
    f, t = fingertip_wrench(raw)
    # Hand pointing down (x-axis flip): hand y = -base y; the left pad is pushed along hand +y.
    np.testing.assert_allclose(f, [0, -0.5, 0], atol=1e-12)
    np.testing.assert_array_equal(t, np.zeros(3))
    raw['force_right'] = 0.5
    np.testing.assert_allclose(fingertip_wrench(raw)[0], np.zeros(3), atol=1e-12)


def test_ros_route_observation_equals_gym_env():
    """Same seed and actions: gym env obs == BridgeCore -> messages -> ObservationBuilder obs."""
    env = SelfAlignEnv(task='push')
    core = make_core(task='push')
    try:
        rng = np.random.default_rng(3)
        obs_env, _ = env.reset(seed=11)
        s = core.reset(11)
        builder = ObservationBuilder()

        def msgs(step):
            r, t = step.result, step.stamp_ns
            js = M.joint_state_msg(core.world.joint_names, r.joint_positions,
                                   r.joint_velocities, r.joint_efforts, t)
            ee = M.pose_msg(r.raw['ee_pos'], r.raw['ee_quat'], t)
            obj = M.pose_msg(r.raw['block_pos'], r.raw['block_quat'], t)
            wrench = M.wrench_msg(*fingertip_wrench(r.raw), t)
            return M.snapshot_from_msgs(js, ee, obj, wrench)

        goal = M.pose_arrays(M.pose_msg(s.result.raw['goal_pos'], np.array([0, 0, 0, 1.0]),
                                        s.stamp_ns))[0]
        out = builder.reset(msgs(s), goal, s.result.block_rest_z)
        np.testing.assert_array_equal(out.observation, obs_env)
        for _ in range(15):
            a = rng.uniform(-0.5, 0.5, 4).astype(np.float32)
            obs_env, *_ , info = env.step(a)
            v, w = action_to_command(a)
            core.on_gripper(w)
            out = builder.step(msgs(core.on_twist(v, 0.0)), a)
            np.testing.assert_allclose(out.observation, obs_env, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(out.packed, info['features'], rtol=1e-6, atol=1e-6)
    finally:
        env.close()
        core.world.close()


@pytest.mark.ros
@pytest.mark.parametrize('arg,name', [('mode:=sometimes', 'mode'),
                                      ('control_rate_hz:=0.5', 'control_rate_hz'),
                                      ('ee_workspace_low_m:=[0.9,-0.3,0.015]',
                                       'ee_workspace_low_m'),
                                      # a typo is not ignored (its default would be used)
                                      ('contol_rate_hz:=20.0', 'contol_rate_hz')])
def test_bridge_process_fails_at_start_naming_the_parameter(arg, name):
    exe = (Path(__file__).resolve().parents[3] / 'install' / 'selfalign_bringup' / 'lib'
           / 'selfalign_bringup' / 'pybullet_bridge')
    proc = subprocess.run([str(exe), '--ros-args', '-p', arg], env=os.environ.copy(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'bad parameter' in proc.stderr and name in proc.stderr, proc.stderr


@pytest.mark.ros
def test_bridge_takes_every_shipped_config_including_the_shared_block(tmp_path):
    """The task YAMLs' shared /** keys are not 'unknown' to the bridge (only typos are)."""
    import yaml

    from selfalign_bringup.bridge_core import SHARED_PARAMETERS
    from selfalign_bringup.wiring import config_dir

    for name in ('push.yaml', 'llm.yaml', 'touch.yaml', 'grasp_lift.yaml'):
        shared = (yaml.safe_load((config_dir() / name).read_text()).get('/**') or {})
        assert set(shared.get('ros__parameters', {})) <= SHARED_PARAMETERS, name
    # ... nor the keys the run description and `selfalign train --resume` add to it
    from selfalign_bringup.wiring import Args, resolve
    assert set(resolve(Args(task='push'))['/**']) | {'resume'} <= SHARED_PARAMETERS
    exe = (Path(__file__).resolve().parents[3] / 'install' / 'selfalign_bringup' / 'lib'
           / 'selfalign_bringup' / 'pybullet_bridge')
    proc = subprocess.Popen([str(exe), '--ros-args', '--params-file',
                             str(config_dir() / 'push.yaml'), '--params-file',
                             str(config_dir() / 'llm.yaml')], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        out = ''
        while time.monotonic() < deadline and 'pybullet_bridge ready' not in out:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert 'pybullet_bridge ready' in out, out
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
