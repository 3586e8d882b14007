"""The reference DrQ-v2 learner, re-typed from facebookresearch/drqv2 (MIT), for speed comparison.

Architecture and update as in the reference ``drqv2.py`` / ``utils.py`` / ``replay_buffer.py``:
float ``grid_sample`` random-shift augmentation, the encoder with its hard-coded 84x84
``repr_dim``, separate ``Q1``/``Q2`` ``nn.Sequential`` heads, a ``torch.distributions``
truncated normal, three plain Adam optimisers, per-parameter soft update, ``.item()`` metrics on
every update, and a replay that stores each observation as the full stacked frames (3x the
pixels) and samples one transition at a time in Python, collated by a ``DataLoader``. Only the
parts the update touches are here (no hydra, no dm_control, no file-backed episodes). Used by
benchmarks/drqv2_speed.py only; the project's learner is selfalign_policy.agent.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import distributions as pyd
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from selfalign_policy.augment import random_shift_grid_sample


def weight_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain('relu'))
        m.bias.data.fill_(0.0)


def schedule(spec: str, step: int) -> float:
    init, final, duration = (float(g) for g in
                             re.match(r'linear\((.+),(.+),(.+)\)', spec).groups())
    mix = np.clip(step / duration, 0.0, 1.0)
    return (1.0 - mix) * init + mix * final


class TruncatedNormal(pyd.Normal):
    def __init__(self, loc, scale, low=-1.0, high=1.0, eps=1e-6):
        super().__init__(loc, scale, validate_args=False)
        self.low, self.high, self.eps = low, high, eps

    def _clamp(self, x):
        clamped = torch.clamp(x, self.low + self.eps, self.high - self.eps)
        return x - x.detach() + clamped.detach()

    def sample(self, clip=None, sample_shape=torch.Size()):  # noqa: B008
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device) * self.scale
        if clip is not None:
            eps = torch.clamp(eps, -clip, clip)
        return self._clamp(self.loc + eps)


class RandomShiftsAug(nn.Module):
    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return random_shift_grid_sample(x, self.pad)


class Encoder(nn.Module):
    def __init__(self, obs_shape):
        super().__init__()
        self.repr_dim = 32 * 35 * 35
        self.convnet = nn.Sequential(
            nn.Conv2d(obs_shape[0], 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU())
        self.apply(weight_init)

    def forward(self, obs):
        obs = obs / 255.0 - 0.5
        h = self.convnet(obs)
        return h.view(h.shape[0], -1)


class Actor(nn.Module):
    def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim),
                                   nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, action_dim))
        self.apply(weight_init)

    def forward(self, obs, std):
        mu = torch.tanh(self.policy(self.trunk(obs)))
        return TruncatedNormal(mu, torch.ones_like(mu) * std)


class Critic(nn.Module):
    def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim),
                                   nn.LayerNorm(feature_dim), nn.Tanh())

        def head():
            return nn.Sequential(nn.Linear(feature_dim + action_dim, hidden_dim),
                                 nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim),
                                 nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1))
        self.Q1, self.Q2 = head(), head()
        self.apply(weight_init)

    def forward(self, obs, action):
        h_action = torch.cat([self.trunk(obs), action], dim=-1)
        return self.Q1(h_action), self.Q2(h_action)


class ReferenceAgent:
    """DrQV2Agent of the reference; ``pixels=False`` drops the encoder (state variant)."""

    def __init__(self, obs_shape, action_dim, hidden_dim=1024, feature_dim=50, lr=1e-4,
                 tau=0.01, stddev_schedule='linear(1.0,0.1,100000)', stddev_clip=0.3,
                 pixels=True):
        self.tau, self.stddev_schedule, self.stddev_clip = tau, stddev_schedule, stddev_clip
        self.pixels = pixels
        self.encoder = Encoder(obs_shape) if pixels else nn.Identity()
        repr_dim = self.encoder.repr_dim if pixels else obs_shape[0]
        self.actor = Actor(repr_dim, action_dim, feature_dim, hidden_dim)
        self.critic = Critic(repr_dim, action_dim, feature_dim, hidden_dim)
        self.critic_target = Critic(repr_dim, action_dim, feature_dim, hidden_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=lr) if pixels else None
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.aug = RandomShiftsAug(pad=4)

    def update_critic(self, obs, action, reward, discount, next_obs, step):
        metrics = {}
        with torch.no_grad():
            dist = self.actor(next_obs, schedule(self.stddev_schedule, step))
            next_action = dist.sample(clip=self.stddev_clip)
            target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2)
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        metrics['critic_target_q'] = target_q.mean().item()
        metrics['critic_q1'] = q1.mean().item()
        metrics['critic_q2'] = q2.mean().item()
        metrics['critic_loss'] = critic_loss.item()
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        return metrics

    def update_actor(self, obs, step):
        metrics = {}
        dist = self.actor(obs, schedule(self.stddev_schedule, step))
        action = dist.sample(clip=self.stddev_clip)
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        q1, q2 = self.critic(obs, action)
        actor_loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        metrics['actor_loss'] = actor_loss.item()
        metrics['actor_logprob'] = log_prob.mean().item()
        metrics['actor_ent'] = dist.entropy().sum(dim=-1).mean().item()
        return metrics

    def update(self, replay_iter, step):
        obs, action, reward, discount, next_obs = (torch.as_tensor(x) for x in next(replay_iter))
        if self.pixels:
            obs = self.aug(obs.float())
            next_obs = self.aug(next_obs.float())
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)
        metrics = {'batch_reward': reward.mean().item()}
        metrics.update(self.update_critic(obs, action, reward, discount, next_obs, step))
        metrics.update(self.update_actor(obs.detach(), step))
        for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
            tp.data.copy_(self.tau * p.data + (1 - self.tau) * tp.data)
        return metrics


class ReferenceReplay(IterableDataset):
    """Episodes as dicts of arrays, observations stored already stacked; one sample at a time."""

    def __init__(self, episodes: list[dict[str, np.ndarray]], nstep=3, discount=0.99):
        self.episodes, self.nstep, self.discount = episodes, nstep, discount

    def _sample(self):
        ep = self.episodes[np.random.randint(len(self.episodes))]
        length = len(ep['observation']) - 1
        idx = np.random.randint(0, length - self.nstep + 1) + 1
        obs = ep['observation'][idx - 1]
        action = ep['action'][idx]
        next_obs = ep['observation'][idx + self.nstep - 1]
        reward = np.zeros_like(ep['reward'][idx])
        discount = np.ones_like(ep['discount'][idx])
        for i in range(self.nstep):
            reward += discount * ep['reward'][idx + i]
            discount *= ep['discount'][idx + i] * self.discount
        return obs, action, reward, discount, next_obs

    def __iter__(self):
        while True:
            yield self._sample()


def make_reference_loader(episodes, batch_size=256):
    """The reference's ``make_replay_loader`` minus files and worker processes."""
    return iter(DataLoader(ReferenceReplay(episodes), batch_size=batch_size, num_workers=0))


def random_episodes(num: int, length: int, obs_shape: tuple[int, ...], action_dim: int,
                    stacked_frames: int = 1, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random episodes in the reference layout (obs stored with their stacked frames)."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(num):
        if len(obs_shape) == 3:
            c, h, w = obs_shape
            frames = rng.integers(0, 256, (length + 1, c // stacked_frames, h, w), np.uint8)
            idx = np.clip(np.arange(length + 1)[:, None] + np.arange(-stacked_frames + 1, 1),
                          0, None)
            obs = frames[idx].reshape(length + 1, c, h, w)  # stored 3x, as FrameStack emits
        else:
            obs = rng.standard_normal((length + 1, *obs_shape)).astype(np.float32)
        eps.append({'observation': obs,
                    'action': rng.uniform(-1, 1, (length + 1, action_dim)).astype(np.float32),
                    'reward': rng.standard_normal((length + 1, 1)).astype(np.float32),
                    'discount': np.ones((length + 1, 1), np.float32)})
    return eps
