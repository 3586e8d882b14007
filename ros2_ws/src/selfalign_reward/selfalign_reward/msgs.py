"""Conversions between selfalign_interfaces messages and the pure reward objects.

* ``episode_to_msg`` / ``episode_from_msg``: ``EpisodeRecord`` <-> ``Episode``.
* ``spec_to_msg`` / ``spec_from_msg``: (``RewardTemplate``, θ, version, source) <-> ``RewardSpec``.

Imports the generated message classes but not rclpy; callers stamp headers if they need to.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from selfalign_core import features as F
from selfalign_core.episode import EpisodeRecord
from selfalign_interfaces.msg import Episode, RewardSpec
from selfalign_reward.template import parse_template, RewardTemplate, TemplateError

_AXES = {3: ('x', 'y', 'z'), 4: ('x', 'y', 'z', 'w')}


def feature_column_names() -> list[str]:
    """Names of the FEATURE_DIM packed columns, vectors expanded (``ee_pos.x``, ...)."""
    out = []
    for f in F.VOCABULARY:
        if not f.shape:
            out.append(f.name)
        else:
            axes = _AXES.get(f.shape[0], tuple(str(k) for k in range(f.shape[0])))
            if f.name == 'action':
                axes = ('dx', 'dy', 'dz', 'gripper')
            out.extend(f'{f.name}.{a}' for a in axes)
    return out


FEATURE_COLUMN_NAMES: tuple[str, ...] = tuple(feature_column_names())


def episode_to_msg(ep: EpisodeRecord) -> Episode:
    """EpisodeRecord -> Episode message (header left for the caller to stamp)."""
    msg = Episode()
    msg.task = ep.task
    msg.episode_index = int(ep.episode_index)
    msg.env_step = int(ep.env_step)
    msg.reward_version = int(ep.reward_version)
    msg.evaluation = bool(ep.evaluation)
    msg.success = bool(ep.success)
    msg.block_rest_z = float(ep.block_rest_z)
    msg.seed = int(ep.seed)
    msg.worker = str(ep.worker)
    msg.num_steps = ep.num_steps
    msg.feature_names = list(FEATURE_COLUMN_NAMES)
    msg.feature_dim = F.FEATURE_DIM
    msg.features = np.ascontiguousarray(ep.features, dtype=np.float32).reshape(-1)
    msg.action_dim = int(ep.actions.shape[1])
    msg.actions = np.ascontiguousarray(ep.actions, dtype=np.float32).reshape(-1)
    msg.rewards = np.ascontiguousarray(ep.rewards, dtype=np.float32).reshape(-1)
    msg.success_flags = [bool(b) for b in ep.success_flags]
    return msg


def episode_from_msg(msg: Episode) -> EpisodeRecord:
    """Episode message -> EpisodeRecord; ValueError names a field that does not fit."""
    if msg.feature_dim != F.FEATURE_DIM:
        raise ValueError(f'Episode.feature_dim is {msg.feature_dim}, this build expects '
                         f'{F.FEATURE_DIM}; publisher and subscriber use different feature '
                         'vocabularies (rebuild both from the same selfalign_reward)')
    if len(msg.feature_names) and tuple(msg.feature_names) != FEATURE_COLUMN_NAMES:
        raise ValueError('Episode.feature_names differ from selfalign_core.features; rebuild '
                         'publisher and subscriber from the same vocabulary')
    t = int(msg.num_steps)
    feats = np.asarray(msg.features, dtype=np.float32)
    if feats.size != t * F.FEATURE_DIM:
        raise ValueError(f'Episode.features has {feats.size} values, expected num_steps * '
                         f'feature_dim = {t} * {F.FEATURE_DIM}')
    a = max(int(msg.action_dim), 1)
    actions = np.asarray(msg.actions, dtype=np.float32)
    if actions.size != t * a:
        raise ValueError(f'Episode.actions has {actions.size} values, expected num_steps * '
                         f'action_dim = {t} * {a}')
    return EpisodeRecord(
        task=msg.task, features=feats.reshape(t, F.FEATURE_DIM), actions=actions.reshape(t, a),
        rewards=np.asarray(msg.rewards, dtype=np.float32),
        success_flags=np.asarray(msg.success_flags, dtype=bool), success=bool(msg.success),
        block_rest_z=float(msg.block_rest_z), seed=int(msg.seed),
        episode_index=int(msg.episode_index), env_step=int(msg.env_step),
        reward_version=int(msg.reward_version), evaluation=bool(msg.evaluation),
        worker=str(msg.worker))


def spec_to_msg(template: RewardTemplate, theta: Mapping[str, float] | None = None,
                version: int = 0, source: str = '', task: str = '') -> RewardSpec:
    """(template, θ, version, source) -> RewardSpec; θ defaults to the initial values."""
    values = template.initial_theta() if theta is None else dict(theta)
    missing = [s.name for s in template.params if s.name not in values]
    if missing:
        raise ValueError(f'theta misses parameters {missing}')
    msg = RewardSpec()
    msg.task = task
    msg.code = template.code
    msg.sha256 = template.sha256
    msg.source = source
    msg.param_names = [s.name for s in template.params]
    msg.param_values = [float(values[s.name]) for s in template.params]
    msg.param_lower = [float(s.lower) for s in template.params]
    msg.param_upper = [float(s.upper) for s in template.params]
    msg.param_scale = [s.scale for s in template.params]
    msg.param_meaning = [s.meaning for s in template.params]
    msg.version = int(version)
    return msg


def spec_from_msg(msg: RewardSpec) -> tuple[RewardTemplate, dict[str, float], int, str]:
    """RewardSpec -> (template, θ, version, source).

    The code is re-parsed (static allow-list check; no code runs) and must match ``sha256`` and
    the message's parameter table. Raises ``TemplateError`` / ``ValueError`` naming the mismatch.
    """
    template = parse_template(msg.code)
    if msg.sha256 and msg.sha256 != template.sha256:
        raise ValueError(f'RewardSpec.sha256 {msg.sha256[:12]}... does not match the code '
                         f'({template.sha256[:12]}...); the spec was corrupted or edited')
    names = list(msg.param_names)
    if names != list(template.param_names):
        raise TemplateError(None, f"RewardSpec.param_names {names} differ from the code's "
                            f'PARAMETERS {list(template.param_names)}',
                            'publish the parameter table parsed from the code')
    if len(msg.param_values) != len(names):
        raise ValueError(f'RewardSpec.param_values has {len(msg.param_values)} values for '
                         f'{len(names)} parameters')
    theta = {n: float(v) for n, v in zip(names, msg.param_values)}
    return template, theta, int(msg.version), msg.source


def key_frames_from_msg(msg: Episode) -> list[tuple[int, np.ndarray]]:
    """An Episode's key frames as (step, uint8 (H, W, 3) RGB); ValueError if one is unreadable."""
    import cv2

    out = []
    for k, (image, step) in enumerate(zip(msg.key_frames, msg.key_frame_steps)):
        bgr = cv2.imdecode(np.frombuffer(bytes(image.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'Episode.key_frames[{k}] ({image.format!r}, {len(image.data)} '
                             'bytes) cannot be decoded; send jpeg or png')
        out.append((int(step), np.ascontiguousarray(bgr[:, :, ::-1])))
    return out
