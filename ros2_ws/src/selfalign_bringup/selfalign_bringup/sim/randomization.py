"""Domain randomisation of the PyBullet scene: dynamics, sensing, camera, actuation and timing.

Pure numpy + the world's hooks (``PandaWorld.apply_dynamics`` / ``set_camera_pose``); no rclpy.
Off by default (``RandomizationConfig.enabled = False``); ``config/domain_randomization.yaml``
documents the default ranges.

Per episode, ``sample_episode(cfg, seed)`` draws one value per parameter uniformly from its
``(low, high)`` range with ``np.random.default_rng([seed, 0x5A11])``: the same episode seed gives
the same randomisation (and noise sequence). Noise *levels* (standard deviations, drop
probabilities) are drawn per episode, the noise itself per step.

Where each kind acts (the rule: sensing noise is what a real driver would show, never the
simulator's state):

* **dynamics** (block mass, lateral / rolling friction, restitution, arm joint damping, finger
  force limit) and the **camera pose** shift: in the world, at reset (``apply_to_world``);
* **sensing** (joint-state, EE-pose and object-pose noise, object-pose drops, contact-force
  noise and bias, image brightness / contrast): ``SensorModel``, applied to what the bridge
  publishes and, with the same code, to the gym env's observation and reward features
  (``RandomizedEnv``); success is always judged on the true state;
* **actuation / timing** (action noise, command latency, control-period jitter):
  ``ActuationModel`` on the command before the world steps (lockstep bridge and gym env; in the
  real-time bridge the latency is wall time, ``rehearsal.CommandTimeline``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from selfalign_bringup.rehearsal import CommandDelay
from selfalign_core import features as F

Range = tuple[float, float]


@dataclass(frozen=True)
class RandomizationConfig:
    """Ranges (low, high) drawn uniformly per episode; defaults = config/domain_randomization.yaml.

    ``*_scale`` fields multiply the SimConfig nominal value; the others are absolute.
    """

    enabled: bool = False
    """Master switch: False = the nominal scene, no noise (the default everywhere)."""
    # ---- dynamics
    block_mass_scale: Range = (0.7, 1.5)
    """Block mass x nominal (0.3 kg)."""
    block_friction_scale: Range = (0.7, 1.3)
    """Block lateral friction x nominal (0.9)."""
    block_rolling_friction: Range = (0.0, 0.002)
    """Block rolling friction coefficient."""
    block_restitution: Range = (0.0, 0.2)
    """Block restitution (bounciness)."""
    joint_damping: Range = (0.0, 0.5)
    """Arm joint damping, N·m·s/rad (PyBullet jointDamping)."""
    finger_force_scale: Range = (0.7, 1.2)
    """Finger force limit x nominal (20 N)."""
    # ---- sensing
    joint_position_noise_rad: Range = (0.0, 0.002)
    """Std of the joint-position noise (also the finger joints, m), per step."""
    joint_velocity_noise_radps: Range = (0.0, 0.02)
    """Std of the joint-velocity noise, per step."""
    ee_position_noise_m: Range = (0.0, 0.002)
    """Std of the EE-pose position noise (forward kinematics, calibration), per step."""
    object_position_noise_m: Range = (0.0, 0.004)
    """Std of the object tracker's position jitter, per step."""
    object_orientation_noise_rad: Range = (0.0, 0.03)
    """Std of the object tracker's orientation jitter (rotation angle per axis), per step."""
    object_pose_drop_prob: Range = (0.0, 0.1)
    """Probability that an object-pose message is lost (the last one stays the latest)."""
    contact_force_noise_n: Range = (0.0, 0.03)
    """Std of the per-pad contact-force noise, N, per step (force readings clip at 0)."""
    contact_force_bias_n: Range = (-0.03, 0.03)
    """Per-episode offset of each pad's force reading, N."""
    # ---- camera
    image_brightness: Range = (-20.0, 20.0)
    """Added to every pixel value (0..255 scale)."""
    image_contrast: Range = (0.8, 1.2)
    """Pixel values scaled about mid-grey 128."""
    camera_eye_shift_m: Range = (0.0, 0.02)
    """Largest |shift| of the camera position per axis (each axis U(-s, s)), m."""
    camera_target_shift_m: Range = (0.0, 0.02)
    """Largest |shift| of the look-at point per axis, m."""
    # ---- actuation and timing
    action_noise: Range = (0.0, 0.05)
    """Std of the Gaussian noise on the EE velocity command, fraction of the speed cap."""
    command_latency_s: Range = (0.0, 0.15)
    """Command latency, s (lockstep / gym: blended in virtual time, rehearsal.CommandDelay)."""
    control_period_jitter: Range = (0.0, 0.1)
    """Std-free bound j: each period moves the arm (1 + U(-j, j)) x the commanded distance."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == 'enabled':
                if not isinstance(self.enabled, bool):
                    raise ValueError(f'domain randomisation enabled={self.enabled!r}: '
                                     'expected true/false')
                continue
            lo, hi = getattr(self, f.name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f'domain randomisation {f.name}=[{lo}, {hi}]: need finite '
                                 'low <= high')
            signed = f.name in ('image_brightness', 'contact_force_bias_n')
            if lo < 0 and not signed:
                raise ValueError(f'domain randomisation {f.name}=[{lo}, {hi}]: must be >= 0')
        if self.object_pose_drop_prob[1] >= 1.0:
            raise ValueError('domain randomisation object_pose_drop_prob: high must be < 1')
        if self.control_period_jitter[1] >= 0.5:
            raise ValueError('domain randomisation control_period_jitter: high must be < 0.5')

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RandomizationConfig:
        """From YAML-style data: {enabled: bool, <name>: [low, high], ...}; unknown keys raise."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f'domain randomisation: unknown key(s) {unknown}; valid: '
                             f'{sorted(names)}')
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k == 'enabled':
                kw[k] = v
            elif (isinstance(v, (list, tuple)) and len(v) == 2
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                kw[k] = (float(v[0]), float(v[1]))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                kw[k] = (float(v), float(v))  # a single number: fixed value
            else:
                raise ValueError(f'domain randomisation {k}={v!r}: expected [low, high] or a '
                                 'number')
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str | Path, task: str | None = None) -> RandomizationConfig:
        """Load ``domain_randomization`` (and ``tasks.<task>`` overrides) from a YAML file."""
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        block = dict(data.get('domain_randomization', {}) or {})
        if task is not None:
            block.update((data.get('tasks', {}) or {}).get(task, {}) or {})
        return cls.from_dict(block)

    def disabled_except(self, *names: str) -> RandomizationConfig:
        """Same config with every range but ``names`` set to no effect (for ablations/tests)."""
        neutral = {'block_mass_scale': (1.0, 1.0), 'block_friction_scale': (1.0, 1.0),
                   'finger_force_scale': (1.0, 1.0), 'image_contrast': (1.0, 1.0)}
        kw: dict[str, Any] = {}
        for f in fields(self):
            if f.name == 'enabled' or f.name in names:
                continue
            kw[f.name] = neutral.get(f.name, (0.0, 0.0))
        return RandomizationConfig(**{**asdict(self), **kw})


@dataclass(frozen=True)
class EpisodeRandomization:
    """One episode's draw (field meanings: RandomizationConfig; absolute values here)."""

    seed: int
    block_mass_kg: float
    block_lateral_friction: float
    block_rolling_friction: float
    block_restitution: float
    joint_damping: float
    finger_force_n: float
    joint_position_noise_rad: float
    joint_velocity_noise_radps: float
    ee_position_noise_m: float
    object_position_noise_m: float
    object_orientation_noise_rad: float
    object_pose_drop_prob: float
    contact_force_noise_n: float
    contact_force_bias_n: tuple[float, float]
    image_brightness: float
    image_contrast: float
    camera_eye_shift_m: tuple[float, float, float]
    camera_target_shift_m: tuple[float, float, float]
    action_noise: float
    command_latency_s: float
    control_period_jitter: float


def episode_rng(seed: int) -> np.random.Generator:
    """The generator of an episode's randomisation (draws and per-step noise)."""
    return np.random.default_rng([abs(int(seed)), 0x5A11])


def sample_episode(cfg: RandomizationConfig, seed: int, nominal: Any = None,
                   rng: np.random.Generator | None = None) -> EpisodeRandomization:
    """Draw one episode's values. ``nominal``: the SimConfig (mass, friction, finger force)."""
    from selfalign_bringup.sim.config import SimConfig

    nom = nominal if nominal is not None else SimConfig()
    r = rng if rng is not None else episode_rng(seed)

    def u(name: str) -> float:
        lo, hi = getattr(cfg, name)
        return float(r.uniform(lo, hi)) if hi > lo else float(lo)

    def shift(name: str) -> tuple[float, float, float]:
        s = u(name)
        return tuple(float(x) for x in r.uniform(-s, s, 3))

    return EpisodeRandomization(
        seed=int(seed),
        block_mass_kg=nom.block_mass_kg * u('block_mass_scale'),
        block_lateral_friction=nom.block_lateral_friction * u('block_friction_scale'),
        block_rolling_friction=u('block_rolling_friction'),
        block_restitution=u('block_restitution'),
        joint_damping=u('joint_damping'),
        finger_force_n=nom.finger_force_n * u('finger_force_scale'),
        joint_position_noise_rad=u('joint_position_noise_rad'),
        joint_velocity_noise_radps=u('joint_velocity_noise_radps'),
        ee_position_noise_m=u('ee_position_noise_m'),
        object_position_noise_m=u('object_position_noise_m'),
        object_orientation_noise_rad=u('object_orientation_noise_rad'),
        object_pose_drop_prob=u('object_pose_drop_prob'),
        contact_force_noise_n=u('contact_force_noise_n'),
        contact_force_bias_n=(u('contact_force_bias_n'), u('contact_force_bias_n')),
        image_brightness=u('image_brightness'),
        image_contrast=u('image_contrast'),
        camera_eye_shift_m=shift('camera_eye_shift_m'),
        camera_target_shift_m=shift('camera_target_shift_m'),
        action_noise=u('action_noise'),
        command_latency_s=u('command_latency_s'),
        control_period_jitter=u('control_period_jitter'))


def apply_to_world(world: Any, ep: EpisodeRandomization) -> None:
    """Dynamics and camera pose of ``ep`` into a freshly reset ``PandaWorld``."""
    world.apply_dynamics(block_mass_kg=ep.block_mass_kg,
                         block_lateral_friction=ep.block_lateral_friction,
                         block_rolling_friction=ep.block_rolling_friction,
                         block_restitution=ep.block_restitution,
                         joint_damping=ep.joint_damping, finger_force_n=ep.finger_force_n)
    cfg = world.cfg
    world.set_camera_pose(np.asarray(cfg.camera_eye_m) + ep.camera_eye_shift_m,
                          np.asarray(cfg.camera_target_m) + ep.camera_target_shift_m)


def _small_rotation(q_xyzw: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """q composed with the rotation vector ``angles`` (3,) rad (small-angle exact exp map)."""
    theta = float(np.linalg.norm(angles))
    if theta < 1e-12:
        return np.asarray(q_xyzw, dtype=np.float64).copy()
    axis = angles / theta
    dq = np.array([*(axis * math.sin(theta / 2)), math.cos(theta / 2)])
    x1, y1, z1, w1 = dq
    x2, y2, z2, w2 = np.asarray(q_xyzw, dtype=np.float64)
    out = np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                    w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                    w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
                    w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])
    return out / np.linalg.norm(out)


class SensorModel:
    """Sensing noise of one episode, as a driver shows it (see the module docstring).

    ``perturb_raw(raw, reset)`` takes the true raw quantities of one step (``features.RAW``
    names; vectors (3,)/(4,), scalars) and returns (what the sensors report, object_fresh):
    noisy poses and forces, finger width from noisy finger joints, velocities by finite
    difference of the *reported* positions over ``period_s`` (kept when a pose is not new, like
    ``ObservationBuilder``), and — with probability ``object_pose_drop_prob``, never at reset —
    the previous object pose (object_fresh False: the bridge does not publish it).
    ``perturb_joints`` does the same for the joint arrays the bridge publishes.
    """

    def __init__(self, ep: EpisodeRandomization, period_s: float,
                 rng: np.random.Generator | None = None) -> None:
        self.ep = ep
        self.period_s = float(period_s)
        self.rng = rng if rng is not None else np.random.default_rng([abs(ep.seed), 0x5E45])
        self._prev: dict[str, np.ndarray] | None = None

    def _noise(self, std: float, shape: tuple[int, ...] | int) -> np.ndarray:
        return self.rng.normal(0.0, std, shape) if std > 0 else np.zeros(shape)

    def force(self, true_n: float, pad: int) -> float:
        """A pad's force reading: true + bias + noise, clipped at 0, N."""
        e = self.ep
        return max(0.0, float(true_n) + e.contact_force_bias_n[pad]
                   + float(self._noise(e.contact_force_noise_n, 1)[0]))

    def perturb_raw(self, raw: dict[str, Any], reset: bool) -> tuple[dict[str, Any], bool]:
        e = self.ep
        out = dict(raw)
        ee = np.asarray(raw['ee_pos'], dtype=np.float64) + self._noise(e.ee_position_noise_m, 3)
        fresh = reset or self._prev is None or not (
            e.object_pose_drop_prob and self.rng.random() < e.object_pose_drop_prob)
        if fresh:
            bpos = (np.asarray(raw['block_pos'], dtype=np.float64)
                    + self._noise(e.object_position_noise_m, 3))
            bquat = _small_rotation(np.asarray(raw['block_quat'], dtype=np.float64),
                                    self._noise(e.object_orientation_noise_rad, 3))
        else:
            bpos, bquat = self._prev['block_pos'], self._prev['block_quat']
        out['ee_pos'], out['block_pos'], out['block_quat'] = ee, bpos, bquat
        out['finger_width'] = float(raw['finger_width']) + float(
            self._noise(e.joint_position_noise_rad, 2).sum())
        out['force_left'] = self.force(raw['force_left'], 0)
        out['force_right'] = self.force(raw['force_right'], 1)
        if reset or self._prev is None:
            out['ee_vel'], out['block_vel'] = np.zeros(3), np.zeros(3)
        else:
            out['ee_vel'] = (ee - self._prev['ee_pos']) / self.period_s
            out['block_vel'] = ((bpos - self._prev['block_pos']) / self.period_s if fresh
                                else self._prev['block_vel'])
        self._prev = {'ee_pos': ee, 'block_pos': bpos, 'block_quat': bquat,
                      'block_vel': np.asarray(out['block_vel'])}
        return out, fresh

    def perturb_joints(self, positions: np.ndarray, velocities: np.ndarray,
                       efforts: np.ndarray, n_fingers: int = 2
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Joint arrays (N,) as published: noisy positions and velocities; the last
        ``n_fingers`` efforts (pad forces, N) get the force bias and noise."""
        e = self.ep
        q = np.asarray(positions, dtype=np.float64) + self._noise(e.joint_position_noise_rad,
                                                                  len(positions))
        qd = np.asarray(velocities, dtype=np.float64) + self._noise(e.joint_velocity_noise_radps,
                                                                    len(velocities))
        tau = np.asarray(efforts, dtype=np.float64).copy()
        for k in range(n_fingers):
            i = len(tau) - n_fingers + k
            tau[i] = self.force(tau[i], k)
        return q, qd, tau

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 image -> brightness/contrast changed copy, uint8."""
        e = self.ep
        if e.image_contrast == 1.0 and e.image_brightness == 0.0:
            return rgb
        x = (rgb.astype(np.float32) - 128.0) * e.image_contrast + 128.0 + e.image_brightness
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class ActuationModel:
    """Action noise, command latency and period jitter of one episode (virtual time).

    ``command(v, width)``: velocity (3,) (m/s or action units — everything here is linear) and
    gripper command -> what acts during this period.
    """

    def __init__(self, ep: EpisodeRandomization, period_s: float, max_speed: float,
                 initial_width: float, rng: np.random.Generator | None = None) -> None:
        self.ep = ep
        self.max_speed = float(max_speed)
        self.rng = rng if rng is not None else np.random.default_rng([abs(ep.seed), 0xAC7])
        self.delay = CommandDelay(ep.command_latency_s, period_s, initial_width)

    def command(self, velocity: np.ndarray, width: float) -> tuple[np.ndarray, float]:
        e = self.ep
        v = np.asarray(velocity, dtype=np.float64).reshape(3)
        if e.action_noise > 0:
            v = v + self.rng.normal(0.0, e.action_noise * self.max_speed, 3)
        v, w = self.delay.push(v, width)
        if e.control_period_jitter > 0:
            v = v * (1.0 + float(self.rng.uniform(-e.control_period_jitter,
                                                  e.control_period_jitter)))
        return v, w


class RandomizedEnv(gym.Wrapper):
    """Domain randomisation around a ``SelfAlignEnv`` (state or pixels).

    Per reset: draws ``EpisodeRandomization`` from the world seed, applies dynamics and camera to
    the world, builds the episode's ``SensorModel`` / ``ActuationModel``. Per step: the action
    goes through actuation (noise, latency blend, jitter; in action units, the gripper sign
    delayed the same way), the env steps, and the observation plus ``info['features']`` (what
    the reward sees) are rebuilt from the sensor model's report. ``info['true_features']``,
    ``info['success']`` and ``info['is_success']`` stay the true ones.
    With ``cfg.enabled`` False the wrapper passes everything through unchanged.
    """

    def __init__(self, env: gym.Env, cfg: RandomizationConfig | dict | None = None) -> None:
        super().__init__(env)
        if not isinstance(cfg, RandomizationConfig):
            cfg = RandomizationConfig.from_dict(cfg)
        self.cfg = cfg
        self.episode: EpisodeRandomization | None = None
        self._sensor: SensorModel | None = None
        self._act: ActuationModel | None = None
        self._rest_z = 0.0

    def _observe(self, packed: np.ndarray, action: np.ndarray, reset: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
        assert self._sensor is not None
        true = F.unpack(packed)
        raw = {n: np.asarray(true[n], dtype=np.float64) for n in F.RAW_NAMES}
        noisy, _ = self._sensor.perturb_raw(raw, reset)
        noisy['action'] = np.asarray(action, dtype=np.float32)
        feats = F.compute_features(noisy, self._rest_z)
        return F.pack(feats)[0], F.observation_vector(feats)[0]

    def _obs(self, obs: np.ndarray, state_obs: np.ndarray) -> np.ndarray:
        if self.unwrapped.obs_mode == 'state':
            return state_obs
        assert self._sensor is not None
        return np.ascontiguousarray(self._sensor.image(obs.transpose(1, 2, 0)).transpose(2, 0, 1))

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        if not self.cfg.enabled:
            return obs, info
        base = self.unwrapped
        world_seed = int(info['world_seed'])
        rng = episode_rng(world_seed)
        self.episode = sample_episode(self.cfg, world_seed, base.cfg, rng)
        apply_to_world(base.world, self.episode)
        period = base.cfg.control_period_s
        self._sensor = SensorModel(self.episode, period, rng)
        self._act = ActuationModel(self.episode, period, 1.0, -1.0, rng)
        self._rest_z = float(info['block_rest_z'])
        if base.obs_mode == 'pixels':  # the camera moved: render the reset frame again
            obs = np.ascontiguousarray(base.world.render_rgb(base.image_size_px)
                                       .transpose(2, 0, 1))
        packed, state_obs = self._observe(info['features'], np.zeros(4, np.float32), True)
        info = dict(info, true_features=info['features'], features=packed,
                    randomization=self.episode)
        return self._obs(obs, state_obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.cfg.enabled:
            return self.env.step(action)
        assert self._act is not None
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        v, g = self._act.command(a[:3], float(a[3]))
        applied = np.concatenate([np.clip(v, -1.0, 1.0), [g]]).astype(np.float32)
        obs, reward, terminated, truncated, info = self.env.step(applied)
        packed, state_obs = self._observe(info['features'], a, False)
        info = dict(info, true_features=info['features'], features=packed, applied_action=applied)
        return self._obs(obs, state_obs), reward, terminated, truncated, info
