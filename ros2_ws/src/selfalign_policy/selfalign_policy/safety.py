"""Deployment safety layer and inference-only policy for a real arm (pure: numpy/torch, no rclpy).

What stands between a trained policy and the arm's command topics in ``deploy_node``. Every
command passes ``SafetyLayer.filter`` once per control period:

1. **E-stop latch** — ``engage_estop`` (``/selfalign/estop`` std_msgs/Bool true) latches; while
   latched every command is a zero twist and no gripper command is sent (the gripper keeps its
   last target: an e-stop must not drop a held object). Only ``release_estop`` clears it.
2. **Watchdog** — when the latest observation is older than ``observation_timeout_s`` (no new
   stamp on a required topic; a silent or frozen driver), the arm is stopped the same way.
3. **Speed** — the commanded EE velocity is scaled down to ``max_ee_speed_mps`` (norm); a
   non-finite command becomes zero.
4. **Workspace box** — each velocity component is limited so that one control period does not
   carry the EE beyond ``[workspace_low_m, workspace_high_m]`` and never further out when it is
   already outside (it may always move back in).
5. **Gripper force** — when a finger pad's measured contact force exceeds
   ``max_gripper_force_n`` a closing command is replaced by the measured width (the position-
   controlled gripper stops squeezing harder); opening is always allowed.

The driver's own limits (the bridge's ``CommandSafety``, MoveIt Servo's, the arm controller's)
stay in force; this layer is the policy side's, independent of which driver runs.

``DeployedPolicy`` loads a training checkpoint (``trainer.Trainer.save``) and returns the
deterministic action (the actor's mean; never exploration noise, never the uniform warm-up).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
import math
import os
from typing import NamedTuple

import numpy as np

#: Reasons a SafeCommand may carry (in this order of precedence for ``stopped``).
ESTOP, STALE, NONFINITE, SPEED, WORKSPACE, GRIPPER_FORCE = (
    'estop', 'stale', 'nonfinite', 'speed', 'workspace', 'gripper_force')


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of the deployment safety layer (ROS parameters ``safety_*`` of policy_node)."""

    workspace_low_m: tuple[float, float, float] = (0.30, -0.30, 0.015)
    """Lower corner (x, y, z) of the box the EE (fingertip centre) may move in, base frame, m."""
    workspace_high_m: tuple[float, float, float] = (0.75, 0.30, 0.40)
    """Upper corner of the EE box, base frame, m."""
    max_ee_speed_mps: float = 0.3
    """Cap on the commanded EE speed (norm), m/s."""
    max_gripper_force_n: float = 15.0
    """Largest contact force per finger pad, N; above it the gripper stops closing."""
    observation_timeout_s: float = 0.3
    """Watchdog: stop when the newest required observation is older than this, s."""
    control_period_s: float = 0.1
    """Control period, s (the workspace limit looks one period ahead)."""

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ValueError(f'SafetyConfig.{name}={getattr(self, name)!r}: {why}')

        for name in ('workspace_low_m', 'workspace_high_m'):
            v = getattr(self, name)
            if len(v) != 3 or not all(math.isfinite(float(x)) for x in v):
                fail(name, 'must be 3 finite numbers (x, y, z) in m, base frame')
        if any(lo >= hi for lo, hi in zip(self.workspace_low_m, self.workspace_high_m)):
            fail('workspace_low_m', f'must be < workspace_high_m={self.workspace_high_m} '
                 'component-wise (swapped?)')
        for name, hi in (('max_ee_speed_mps', 2.0), ('max_gripper_force_n', 1000.0),
                         ('observation_timeout_s', 60.0), ('control_period_s', 1.0)):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and 0.0 < v <= hi):
                fail(name, f'must be in (0, {hi}]')
        if self.observation_timeout_s < self.control_period_s:
            fail('observation_timeout_s', f'must be >= control_period_s={self.control_period_s}'
                 ' or every observation counts as stale')


class RobotState(NamedTuple):
    """What the safety layer needs to know about the arm (latest observation)."""

    ee_pos_m: np.ndarray
    """(3,) fingertip centre, base frame, m."""
    finger_width_m: float
    """Measured finger width, m."""
    pad_forces_n: np.ndarray
    """(2,) contact force of the left / right finger pad, N."""


class SafeCommand(NamedTuple):
    """The command that may be sent this period."""

    velocity_mps: np.ndarray
    """(3,) EE linear velocity, base frame, m/s (zeros when stopped)."""
    finger_width_m: float | None
    """Finger width to command, m; None = send no gripper command (hold the last target)."""
    stopped: bool
    """True when the e-stop or the watchdog zeroed the command."""
    reasons: tuple[str, ...]
    """Which rules changed the command (ESTOP, STALE, NONFINITE, SPEED, WORKSPACE, ...)."""


class SafetyLayer:
    """Applies ``SafetyConfig`` to every command; see the module docstring for the rules.

    Thread-safe enough for one writer per method: ``engage_estop`` may be called from a
    subscription thread while ``filter`` runs on the control timer (a bool assignment).
    """

    def __init__(self, cfg: SafetyConfig) -> None:
        self.cfg = cfg
        self._low = np.asarray(cfg.workspace_low_m, dtype=np.float64)
        self._high = np.asarray(cfg.workspace_high_m, dtype=np.float64)
        self._estop = False
        self.estop_reason = ''
        self.interventions = {r: 0 for r in (ESTOP, STALE, NONFINITE, SPEED, WORKSPACE,
                                             GRIPPER_FORCE)}

    # ------------------------------------------------------------------ e-stop
    @property
    def estop_latched(self) -> bool:
        return self._estop

    def engage_estop(self, reason: str = 'estop') -> None:
        """Latch the e-stop: every later ``filter`` returns a stop until ``release_estop``."""
        self._estop = True
        self.estop_reason = reason

    def release_estop(self) -> None:
        """Clear the latch (an operator's explicit act)."""
        self._estop = False
        self.estop_reason = ''

    def stop_command(self, reason: str) -> SafeCommand:
        """The command sent while stopped: zero twist, no gripper command."""
        return SafeCommand(np.zeros(3), None, True, (reason,))

    # ------------------------------------------------------------------ filter
    def is_stale(self, observation_age_s: float | None) -> bool:
        """True when no observation ever came (None) or the newest is older than the timeout."""
        return (observation_age_s is None or not math.isfinite(observation_age_s)
                or observation_age_s > self.cfg.observation_timeout_s)

    def filter(self, velocity_mps: np.ndarray, finger_width_m: float,
               state: RobotState | None, observation_age_s: float | None) -> SafeCommand:
        """Policy command -> the command allowed this period.

        Args:
            velocity_mps: (3,) commanded EE velocity, base frame, m/s.
            finger_width_m: commanded finger width, m.
            state: the latest observation (None: unknown -> stop).
            observation_age_s: age of the newest required observation, s (None: none yet).
        """
        if self._estop:
            self.interventions[ESTOP] += 1
            return self.stop_command(ESTOP)
        if state is None or self.is_stale(observation_age_s):
            self.interventions[STALE] += 1
            return self.stop_command(STALE)
        reasons: list[str] = []
        v = np.asarray(velocity_mps, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(v)):
            v = np.zeros(3)
            reasons.append(NONFINITE)
        speed = float(np.linalg.norm(v))
        if speed > self.cfg.max_ee_speed_mps:
            v = v * (self.cfg.max_ee_speed_mps / speed)
            reasons.append(SPEED)
        p = np.asarray(state.ee_pos_m, dtype=np.float64).reshape(3)
        dt = self.cfg.control_period_s
        lo = np.minimum((self._low - p) / dt, 0.0)
        hi = np.maximum((self._high - p) / dt, 0.0)
        clipped = np.clip(v, lo, hi)
        if not np.array_equal(clipped, v):
            reasons.append(WORKSPACE)
        v = clipped
        w = float(finger_width_m)
        if not math.isfinite(w):
            w = float(state.finger_width_m)
            reasons.append(NONFINITE)
        force = float(np.max(np.abs(np.asarray(state.pad_forces_n, dtype=np.float64))))
        if force > self.cfg.max_gripper_force_n and w < float(state.finger_width_m):
            w = float(state.finger_width_m)
            reasons.append(GRIPPER_FORCE)
        for r in reasons:
            self.interventions[r] += 1
        return SafeCommand(v, w, False, tuple(reasons))


class ObservationWatchdog:
    """Tracks, per required topic, when a message with a *new* stamp last arrived.

    A driver that goes silent and one that keeps re-publishing an old stamp (a frozen
    pipeline) both age the observation. Times are the caller's monotonic clock, s.
    """

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = tuple(kinds)
        self._stamp: dict[str, int] = {}
        self._arrival: dict[str, float] = {}

    def put(self, kind: str, stamp_ns: int, now_s: float) -> None:
        if self._stamp.get(kind) != int(stamp_ns):
            self._stamp[kind] = int(stamp_ns)
            self._arrival[kind] = float(now_s)

    def age_s(self, now_s: float) -> float | None:
        """Age of the oldest of the required topics' newest messages; None if one never came."""
        if any(k not in self._arrival for k in self.kinds):
            return None
        return float(now_s) - min(self._arrival[k] for k in self.kinds)


class DeployedPolicy:
    """A trained DrQ-v2 actor loaded from a checkpoint, acting deterministically.

    Args:
        path: checkpoint file written by ``trainer.Trainer.save`` (``<run_dir>/checkpoint.pt``).
        device: torch device name ('cpu' on the robot PC by default).

    ``act(frame)`` takes one env observation — float32 (OBS_DIM,) state or uint8 (3, H, W)
    pixels — stacks pixel frames like the trainer (``replay.frame_stack``, first frame repeated
    at an episode start) and returns float32 (A,) in [-1, 1]: the actor's mean, as in the
    trainer's evaluation episodes. ``reset()`` starts a new episode's frame stack.
    """

    def __init__(self, path: str | os.PathLike, device: str = 'cpu') -> None:
        import torch

        from selfalign_policy.agent import DrQV2Agent
        from selfalign_policy.config import DrQV2Config

        state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict) or 'agent' not in state or 'config' not in state:
            raise ValueError(f'{path} is not a selfalign training checkpoint (no agent/config); '
                             'pass <run_dir>/checkpoint.pt written by the trainer')
        cfg = DrQV2Config.from_dict(state['config'])
        agent_cfg = replace(cfg.agent, device=device)
        a = state['agent']
        self.agent = DrQV2Agent(tuple(a['obs_shape']), int(a['action_dim']), agent_cfg)
        self.agent.load_state_dict(a)
        for net in (self.agent.actor, self.agent.encoder):
            net.eval()
        self.config = cfg
        self.obs_shape = self.agent.obs_shape
        self.action_dim = self.agent.action_dim
        self.pixels = self.agent.pixels
        self.frame_stack = cfg.replay.frame_stack if self.pixels else 1
        self.env_step = int(state.get('counters', {}).get('env_step', 0))
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)

    def reset(self) -> None:
        self._frames.clear()

    def act(self, frame: np.ndarray) -> np.ndarray:
        """One observation -> deterministic action float32 (A,) in [-1, 1]."""
        frame = np.asarray(frame)
        if not self._frames:
            self._frames.extend([frame] * self.frame_stack)
        else:
            self._frames.append(frame)
        obs = (np.concatenate(list(self._frames), axis=0) if self.pixels
               else frame.astype(np.float32, copy=False))
        if obs.shape != self.obs_shape:
            raise ValueError(f"observation shape {obs.shape} != the checkpoint policy's "
                             f'{self.obs_shape}: deploy with the obs mode it was trained on')
        # eval_mode=True: the actor mean; step is irrelevant (no schedule, no warm-up).
        return self.agent.act(obs, step=10**12, eval_mode=True)
