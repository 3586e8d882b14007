"""A gymnasium-style env over the robot contract: what policy_node trains on (no rclpy here).

``RobotContractEnv`` turns the contract's messages into the trainer's env interface
(``reset(seed=) -> (obs, info)``, ``step(action) -> (obs, reward, terminated, truncated, info)``
with ``info['features']``), through ``observation.ObservationBuilder`` and ``contract_msgs``.
It talks to the robot through a ``Transport`` (policy_node implements it with rclpy: publish
the twist and gripper commands, call ``/selfalign/reset_episode``) and is fed state messages by
the node's subscriptions through ``StateSync.put``.

Stepping: ``step`` sends the command, then waits for a full set of state messages (joint
states, EE pose, object pose; plus the camera image for pixels) stamped *after* the previous
step's. In lockstep the driver answers every command with exactly one such set; in realtime
the driver's timer produces it at its own rate and the env takes the first newer set.

A driver silent for ``state_timeout_s`` mid-episode has stopped or restarted (a restarted
lockstep driver waits for a reset, and its clock starts again, so waiting on would never end):
the step warns and raises ``trainer.EpisodeAbortedError``; the trainer drops the partial episode
and resets, and ``reset`` retries, warning that training is paused, until a driver serves
``reset_episode``. Nothing stored is lost. ``should_stop`` lets the node end any wait at
shutdown (``EnvStoppedError``).
"""

from __future__ import annotations

from collections.abc import Callable
import threading
import time
from typing import Any, Protocol

from gymnasium import spaces
import numpy as np

from selfalign_core import contract_msgs as cm
from selfalign_core import features as F
from selfalign_core import tasks
from selfalign_core.contract import ACTION_DIM, action_to_command, ActionScale
from selfalign_core.observation import ObservationBuilder
from selfalign_policy.trainer import EpisodeAbortedError

STATE_KINDS = ('joint_states', 'ee_pose', 'object_pose')


class EnvStoppedError(RuntimeError):
    """The node is shutting down while the env waited for the robot."""


class Transport(Protocol):
    """What the env needs from the node."""

    def send_command(self, velocity_mps: np.ndarray, finger_width_m: float) -> None:
        """Publish the gripper command, then the twist (the lockstep trigger)."""

    def reset(self, seed: int, timeout_s: float, render_video: bool = False) -> Any | None:
        """Call ResetEpisode (render_video: film the episode); the response, or None on
        timeout / no service."""


class StateSync:
    """Latest contract messages by kind, and a wait for a set stamped after a given time.

    ``put`` is called from subscription callbacks (any thread); ``wait_newer`` from the
    training thread. The ``ee_wrench`` message is optional (used only without finger efforts).
    With ``pump`` (``pump(timeout_s)`` waits up to that long for messages and ``put``s what it
    takes: subscriptions no executor serves, ``selfalign_core.polled``), ``wait_newer`` runs it
    on the calling thread instead of waiting for callbacks.
    """

    def __init__(self, kinds: tuple[str, ...] = STATE_KINDS,
                 pump: Callable[[float], None] | None = None) -> None:
        self.kinds = kinds
        self.pump = pump
        self._msgs: dict[str, Any] = {}
        self._stamps: dict[str, int] = {}
        self._cond = threading.Condition()
        self.received = 0

    def put(self, kind: str, msg: Any) -> None:
        with self._cond:
            self._msgs[kind] = msg
            self._stamps[kind] = cm.stamp_ns(msg.header.stamp)
            self.received += 1
            self._cond.notify_all()

    def latest_stamp(self) -> int:
        with self._cond:
            return max(self._stamps.values(), default=-1)

    def _ready(self, after_ns: int) -> bool:
        return all(self._stamps.get(k, -1) > after_ns for k in self.kinds)

    def wait_newer(self, after_ns: int, timeout_s: float) -> dict[str, Any] | None:
        """Messages of every kind stamped > ``after_ns`` (dict by kind), or None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._ready(after_ns):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self.pump is None:
                    self._cond.wait(left)
                    continue
                self._cond.release()  # the pump puts what it takes
                try:
                    self.pump(left)
                finally:
                    self._cond.acquire()
            return dict(self._msgs)


class RobotContractEnv:
    """Episodes of ``task`` on a robot speaking the contract (see the module docstring).

    Args:
        transport: the node's publishers / reset client.
        sync: the node's StateSync (fed by its subscriptions).
        task: task name (episode length, success flags).
        obs_mode: 'state' (features.observation_vector) or 'pixels' (camera, uint8 (3, H, W)).
        image_size_px: pixel observation side (the driver's camera must publish this size).
        state_timeout_s: a silent robot aborts the episode after this long (see above).
        reset_timeout_s: per ResetEpisode attempt.
        warn: logger for the throttled warnings.
        should_stop: polled while waiting; True raises EnvStoppedError.
        action_scale: contract.ActionScale (default: the contract's).
        videos_per_eval: the first this many evaluation episodes of each evaluation
            round ask the driver to film them (ResetEpisode.render_video; the trainer passes
            ``options={'evaluation': True, 'eval_index': j}`` to reset).

    Each step's info carries ``stamp_ns``, the driver-clock stamp of the state it returns (the
    reset's info: of the reset state), so camera frames can be matched to an episode.
    """

    def __init__(self, transport: Transport, sync: StateSync, task: str,
                 obs_mode: str = 'state', image_size_px: int = 84,
                 action_scale: ActionScale | None = None, state_timeout_s: float = 2.0,
                 reset_timeout_s: float = 5.0, warn: Callable[[str], None] = print,
                 should_stop: Callable[[], bool] = lambda: False,
                 videos_per_eval: int = 0) -> None:
        if obs_mode not in ('state', 'pixels'):
            raise ValueError(f"obs_mode={obs_mode!r}: choose 'state' or 'pixels'")
        self.transport = transport
        self.sync = sync
        self.task = tasks.get_task(task)
        self.obs_mode = obs_mode
        self.action_scale = action_scale or ActionScale()
        self.state_timeout_s = state_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self.warn = warn
        self.should_stop = should_stop
        self.videos_per_eval = int(videos_per_eval)
        self.builder = ObservationBuilder()
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        if obs_mode == 'state':
            self.observation_space = spaces.Box(-np.inf, np.inf, (F.OBS_DIM,), np.float32)
        else:
            self.observation_space = spaces.Box(0, 255, (3, image_size_px, image_size_px),
                                                np.uint8)
        self._last_ns = -1
        self._t = 0
        self._feats: list[np.ndarray] = []
        self._action = np.zeros(ACTION_DIM, np.float32)

    # ------------------------------------------------------------------ helpers
    def _wait_state(self, after_ns: int, what: str) -> dict[str, Any]:
        """State messages stamped after ``after_ns``; EpisodeAbortedError after the timeout."""
        deadline = time.monotonic() + self.state_timeout_s
        while True:
            if self.should_stop():
                raise EnvStoppedError('shutdown while waiting for the robot')
            left = deadline - time.monotonic()
            msgs = self.sync.wait_newer(after_ns, min(max(left, 0.0), 0.25))
            if msgs is not None:
                return msgs
            if left <= 0:
                self.warn(f'no robot state newer than {after_ns * 1e-9:.3f} s for '
                          f'{self.state_timeout_s:.1f} s ({what}): episode aborted, training '
                          f'paused until the driver publishes {", ".join(self.sync.kinds)} '
                          'again')
                raise EpisodeAbortedError(f'robot silent for {self.state_timeout_s} s ({what})')

    def _snapshot(self, msgs: dict[str, Any]) -> cm.ContractSnapshot:
        return cm.snapshot_from_msgs(msgs['joint_states'], msgs['ee_pose'], msgs['object_pose'],
                                     msgs.get('ee_wrench'))

    def _obs(self, state_obs: np.ndarray, msgs: dict[str, Any]) -> np.ndarray:
        if self.obs_mode == 'state':
            return state_obs.astype(np.float32, copy=False)
        img = cm.image_array(msgs['image'])  # (H, W, 3) uint8
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        seed = -1 if seed is None else int(seed)
        opts = options or {}
        film = (bool(opts.get('evaluation'))
                and int(opts.get('eval_index', 0)) < self.videos_per_eval)
        while True:
            if self.should_stop():
                raise EnvStoppedError('shutdown while resetting')
            reply = self.transport.reset(seed, self.reset_timeout_s, render_video=film)
            if reply is not None and reply.success:
                break
            why = 'no reply' if reply is None else reply.message
            self.warn(f'reset_episode failed ({why}): training paused, retrying until the '
                      'driver serves /selfalign/reset_episode')
            time.sleep(0.1)
        msgs = {'joint_states': reply.joint_state, 'ee_pose': reply.ee_pose,
                'object_pose': reply.object_pose, 'ee_wrench': reply.ee_wrench}
        goal, _ = cm.pose_arrays(reply.goal_pose)
        out = self.builder.reset(self._snapshot(msgs), goal, reply.block_rest_z)
        self._last_ns = max(cm.stamp_ns(reply.ee_pose.header.stamp),
                            cm.stamp_ns(reply.object_pose.header.stamp))
        if self.obs_mode == 'pixels':  # the image of the reset state comes on the topic
            msgs = self._wait_state(self._last_ns - 1, 'reset image')
        self._t = 0
        self._feats = []
        info = {'features': out.packed, 'block_rest_z': self.builder.block_rest_z,
                'seed': int(reply.seed), 'stamp_ns': self._last_ns}
        return self._obs(out.observation, msgs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.step_async(action)
        return self.step_wait()

    def step_async(self, action: np.ndarray) -> None:
        """Send the command of ``action``; ``step_wait`` then waits for its state (the trainer
        sends every worker's command before it waits for any)."""
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(ACTION_DIM), -1.0, 1.0)
        velocity, width = action_to_command(action, self.action_scale)
        self.transport.send_command(velocity, width)
        self._action = action

    def step_wait(self) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The state that answers ``step_async``'s command (see ``step``)."""
        action = self._action
        msgs = self._wait_state(self._last_ns, f'step {self._t + 1}')
        stamps = [cm.stamp_ns(msgs[k].header.stamp) for k in self.sync.kinds]
        self._last_ns = max(stamps)
        out = self.builder.step(self._snapshot(msgs), action)
        self._t += 1
        self._feats.append(out.packed)
        success = bool(tasks.step_condition(self.task.name, out.features)[0])
        truncated = self._t >= self.task.episode_steps
        info: dict[str, Any] = {'features': out.packed, 'action': action, 'success': success,
                                'block_rest_z': self.builder.block_rest_z,
                                'stamp_ns': self._last_ns}
        if truncated:
            ep = np.stack(self._feats)
            info['episode_features'] = ep
            info['is_success'] = bool(tasks.episode_success(self.task.name, F.unpack(ep)))
        reward = float(tasks.oracle_reward(self.task.name, out.features)[0])
        return self._obs(out.observation, msgs), reward, False, truncated, info

    def close(self) -> None:
        pass
