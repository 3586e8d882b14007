"""DrQ-v2 agent: conv encoder, actor, twin-Q critic and the update, after facebookresearch/drqv2.

Reads top-down like ``drqv2.py``: encoder, actor, critic, agent (act, update_critic,
update_actor, update returning a metrics dict). The math is the reference's: encoder 4 x conv3x3
32 ch (first stride 2) on obs / 255 - 0.5; actor and critic each with their own Linear ->
LayerNorm -> Tanh trunk; twin Q heads; orthogonal init; three Adam optimisers; clipped
double-Q target with target-policy noise (stddev_clip); soft target update; a truncated-normal
policy with a linear std schedule; uniform actions for the first ``num_expl_steps`` steps.
State observations use the same agent without the conv encoder (``repr_dim = obs_dim``).

Implementation choices that keep the math but run faster on a small CPU (see
benchmarks/drqv2_speed.py): the encoder
runs channels-last and is flattened in (H, W, C) order (a fixed permutation of the trunk's input
columns, so the same function class and init distribution); critic parameters do not accumulate
the actor loss's gradient (the reference zeroes it before it is ever used); fused Adam; the
target update is one foreach lerp; augmentation is an integer crop on uint8 (augment.py).

Shapes: pixel obs uint8 ``(B, S*C, H, W)``; state obs float32 ``(B, D)``; actions float32
``(B, A)`` in [-1, 1]; reward and discount float32 ``(B, 1)``. All taken from the env spec.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from selfalign_policy.augment import random_shift_crop
from selfalign_policy.config import AgentConfig

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def resolve_device(name: str) -> torch.device:
    """'cpu' | 'cuda' | 'cuda:N' | 'auto' -> torch.device; asking for cuda without one fails."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f"AgentConfig.device = {name!r} but torch sees no CUDA device; use "
                           "'cpu' or 'auto'")
    return torch.device(name)


def keep_freed_memory_in_heap() -> bool:
    """glibc only: serve large allocations from the heap and never trim it (process-wide).

    A pixel update allocates ~50 MB activations many times; by default glibc maps each one
    fresh (mmap) and the kernel zero-fills it page by page on first touch, which cost ~30 % of
    an update on this CPU. With mmap off, freed blocks are reused. Memory is not returned to the
    OS until exit. Returns False where it does not apply (not glibc).
    """
    global _HEAP_TUNED
    if _HEAP_TUNED:
        return True
    try:
        libc = ctypes.CDLL('libc.so.6')
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**30) == 1
    except (OSError, AttributeError):
        return False
    _HEAP_TUNED = ok
    return ok


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_HEAP_TUNED = False


def weight_init(m: nn.Module) -> None:
    """drqv2 ``utils.weight_init``: orthogonal weights (relu gain for convs), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        if m.bias is not None:
            m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain('relu'))
        if m.bias is not None:
            m.bias.data.fill_(0.0)


class Encoder(nn.Module):
    """Conv encoder: uint8 (B, C, H, W) -> float (B, repr_dim); repr_dim from obs_shape."""

    def __init__(self, obs_shape: tuple[int, int, int], channels_last: bool = True) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f'Encoder needs (C, H, W) observations, got {obs_shape}')
        self.channels_last = channels_last
        self.convnet = nn.Sequential(
            nn.Conv2d(obs_shape[0], 32, 3, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(inplace=True))
        self.apply(weight_init)
        if channels_last:
            self.convnet.to(memory_format=torch.channels_last)
        with torch.no_grad():  # shape from the spec, not the reference's hard-coded 32*35*35
            self.repr_dim = int(self.convnet(torch.zeros(1, *obs_shape)).numel())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            # NHWC uint8 copy first: the float conversion then keeps channels-last for free.
            obs = obs.contiguous(memory_format=torch.channels_last)
        if obs.dtype == torch.uint8:
            x = obs.to(torch.float32).div_(255.0).sub_(0.5)  # a fresh tensor: in place is safe
        else:
            x = obs.to(torch.float32) / 255.0 - 0.5
        h = self.convnet(x)
        if self.channels_last:
            return h.permute(0, 2, 3, 1).flatten(1)  # a view: (H, W, C) order
        return h.flatten(1)


class Actor(nn.Module):
    """Deterministic part of the policy: repr (B, repr_dim) -> mean action (B, A) in (-1, 1)."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int
                 ) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim),
                                   nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, action_dim))
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.policy(self.trunk(obs)))


class Critic(nn.Module):
    """Twin Q: (repr (B, repr_dim), action (B, A)) -> (Q1 (B, 1), Q2 (B, 1)).

    The reference's: a shared Linear -> LayerNorm -> Tanh trunk, then two independent heads
    Linear(feature_dim + A, hidden) -> ReLU -> Linear(hidden, hidden) -> ReLU -> Linear(hidden, 1),
    orthogonally initialised. Two plain heads, not one stacked batched matmul: on CPU ``bmm``
    cost 2x two ``addmm`` (profiled; see benchmarks/drqv2_speed.py).
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int
                 ) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim),
                                   nn.LayerNorm(feature_dim), nn.Tanh())

        def head() -> nn.Sequential:
            return nn.Sequential(nn.Linear(feature_dim + action_dim, hidden_dim),
                                 nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim),
                                 nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1))

        self.Q1, self.Q2 = head(), head()
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.trunk(obs), action], dim=-1)
        return self.Q1(h), self.Q2(h)


# Checkpoints written before the critic had two plain heads stored them stacked (one Linear of
# 2*hidden rows, then batched (2, ...) weights). Parameter order in those files:
_STACKED_CRITIC = ('trunk.0.weight', 'trunk.0.bias', 'trunk.1.weight', 'trunk.1.bias',
                   'l1.weight', 'l1.bias', 'w2', 'b2', 'w3', 'b3')


def unstack_critic(old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stacked-heads critic state (names in ``_STACKED_CRITIC``) -> ``Critic``'s Q1/Q2 names.

    Works on parameters and on anything shaped like them (Adam's moments).
    """
    new = {k: v for k, v in old.items() if k.startswith('trunk.')}
    h = old['w2'].shape[1]
    for k, q in enumerate(('Q1', 'Q2')):
        rows = slice(k * h, (k + 1) * h)
        new.update({f'{q}.0.weight': old['l1.weight'][rows], f'{q}.0.bias': old['l1.bias'][rows],
                    f'{q}.2.weight': old['w2'][k].T, f'{q}.2.bias': old['b2'][k, 0],
                    f'{q}.4.weight': old['w3'][k].T, f'{q}.4.bias': old['b3'][k, 0]})
    return {k: v.contiguous().clone() for k, v in new.items()}


def _unstack_critic_opt(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Adam state of a stacked-heads critic -> the same moments for ``names`` (Critic order)."""
    per = [state['state'][i] for i in range(len(_STACKED_CRITIC))]
    out: dict[int, dict[str, torch.Tensor]] = {i: {} for i in range(len(names))}
    for key in per[0]:
        if key == 'step':
            for i in out:
                out[i][key] = per[0][key].clone()
            continue
        moved = unstack_critic({n: s[key] for n, s in zip(_STACKED_CRITIC, per)})
        for i, name in enumerate(names):
            out[i][key] = moved[name]
    groups = [{**state['param_groups'][0], 'params': list(range(len(names)))}]
    return {'state': out, 'param_groups': groups}


def _make_adam(params: list[nn.Parameter], lr: float, device: torch.device
               ) -> torch.optim.Adam:
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # an old torch without fused Adam on this device
        return torch.optim.Adam(params, lr=lr, foreach=device.type == 'cuda')


class DrQV2Agent:
    """The learner. ``act`` picks actions; ``update`` does one gradient step on a batch.

    Args:
        obs_shape: (C, H, W) for pixels (stacked frames, uint8) or (D,) for state (float32).
        action_dim: A; actions live in [-1, 1]^A (rescaling to robot units is the driver's job).
        cfg: AgentConfig.
    """

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == 'cpu' and cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        if self.device.type == 'cpu' and cfg.cpu_heap_reuse and len(obs_shape) == 3:
            keep_freed_memory_in_heap()
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.action_dim = int(action_dim)
        self.pixels = len(self.obs_shape) == 3
        if not self.pixels and len(self.obs_shape) != 1:
            raise ValueError(f'obs_shape {self.obs_shape} must be (C, H, W) or (D,)')
        # ALGO LOGIC: networks
        if self.pixels:
            self.encoder: nn.Module = Encoder(self.obs_shape, cfg.channels_last and
                                              self.device.type == 'cpu').to(self.device)
            repr_dim = self.encoder.repr_dim
        else:
            self.encoder = nn.Identity()
            repr_dim = self.obs_shape[0]
        self.repr_dim = repr_dim
        self.actor = Actor(repr_dim, action_dim, cfg.feature_dim, cfg.hidden_dim).to(self.device)
        self.critic = Critic(repr_dim, action_dim, cfg.feature_dim,
                             cfg.hidden_dim).to(self.device)
        self.critic_target = Critic(repr_dim, action_dim, cfg.feature_dim,
                                    cfg.hidden_dim).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        # ALGO LOGIC: three optimisers (the state agent has no encoder to optimise)
        self.encoder_opt = (_make_adam(list(self.encoder.parameters()), cfg.lr, self.device)
                            if self.pixels else None)
        self.actor_opt = _make_adam(list(self.actor.parameters()), cfg.lr, self.device)
        self.critic_opt = _make_adam(list(self.critic.parameters()), cfg.lr, self.device)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    # ------------------------------------------------------------------ acting
    def _to_tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    def _sample(self, mu: torch.Tensor, std: float, clip: float | None) -> torch.Tensor:
        """drqv2 TruncatedNormal.sample: mu + clipped noise, clamped with straight-through."""
        eps = torch.randn_like(mu) * std
        if clip is not None:
            eps = eps.clamp(-clip, clip)
        x = mu + eps
        clamped = x.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        return x - x.detach() + clamped.detach() if x.requires_grad else clamped

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """One observation (obs_shape) -> action float32 (A,) in [-1, 1]."""
        return self.act_batch(np.asarray(obs)[None], step, eval_mode)[0]

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """K observations (K, *obs_shape) -> actions float32 (K, A) in [-1, 1], one forward
        pass (the workers of a round)."""
        o = self._to_tensor(obs)
        mu = self.actor(self.encoder(o))
        if eval_mode:
            action = mu
        else:
            action = self._sample(mu, self.cfg.stddev(step), None)
            if step < self.cfg.num_expl_steps:
                action.uniform_(-1.0, 1.0)
        return action.cpu().numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------ learning
    def update_critic(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_obs: torch.Tensor, std: float
                      ) -> list[torch.Tensor]:
        """Clipped double-Q TD step on critic (and encoder through ``obs``)."""
        with torch.no_grad():
            next_action = self._sample(self.actor(next_obs), std, self.cfg.stddev_clip)
            target_qs = self.critic_target(next_obs, next_action)
            target_v = torch.min(target_qs[0], target_qs[1])
            target_q = reward + discount * target_v
        qs = self.critic(obs, action)
        critic_loss = F.mse_loss(qs[0], target_q) + F.mse_loss(qs[1], target_q)
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        return [target_q.mean(), qs[0].mean(), qs[1].mean(), critic_loss.detach()]

    def update_actor(self, obs: torch.Tensor, std: float) -> list[torch.Tensor]:
        """Deterministic policy gradient through min(Q1, Q2) on detached features."""
        mu = self.actor(obs)
        action = self._sample(mu, std, self.cfg.stddev_clip)
        for p in self._critic_params:  # the reference discards these grads unused
            p.requires_grad_(False)
        try:
            qs = self.critic(obs, action)
        finally:
            for p in self._critic_params:
                p.requires_grad_(True)
        actor_loss = -torch.min(qs[0], qs[1]).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            log_std = math.log(max(std, 1e-12))
            log_prob = (-0.5 * ((action - mu) / max(std, 1e-12)) ** 2 - log_std
                        - _LOG_SQRT_2PI).sum(-1).mean()
            entropy = torch.full((), (0.5 + _LOG_SQRT_2PI + log_std) * self.action_dim)
        return [actor_loss.detach(), log_prob, entropy.to(self.device)]

    METRIC_NAMES = ('batch_reward', 'critic_target_q', 'critic_q1', 'critic_q2', 'critic_loss',
                    'actor_loss', 'actor_logprob', 'actor_ent')

    def update(self, batch: Any, step: int, with_metrics: bool = True) -> dict[str, float]:
        """One update on ``batch`` (replay.Batch or a 5-tuple obs, action, reward, discount,
        next_obs) at environment step ``step``; returns drqv2's metrics (empty if not asked).
        """
        obs, action, reward, discount, next_obs = (self._to_tensor(x) for x in batch)
        if self.pixels and self.cfg.aug_pad > 0:  # DrQ-v2 random-shift aug, pad=4
            obs = random_shift_crop(obs, self.cfg.aug_pad)
            next_obs = random_shift_crop(next_obs, self.cfg.aug_pad)
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)
        std = self.cfg.stddev(step)
        m = [reward.mean()]
        m += self.update_critic(obs, action, reward, discount, next_obs, std)
        m += self.update_actor(obs.detach(), std)
        with torch.no_grad():  # target <- (1 - tau) target + tau critic
            torch._foreach_lerp_(self._target_params, self._critic_params,
                                 self.cfg.critic_target_tau)
        if not with_metrics:
            return {}
        return dict(zip(self.METRIC_NAMES, torch.stack(m).tolist()))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {'encoder': self.encoder.state_dict(), 'actor': self.actor.state_dict(),
                 'critic': self.critic.state_dict(),
                 'critic_target': self.critic_target.state_dict(),
                 'actor_opt': self.actor_opt.state_dict(),
                 'critic_opt': self.critic_opt.state_dict(),
                 'obs_shape': self.obs_shape, 'action_dim': self.action_dim}
        if self.encoder_opt is not None:
            state['encoder_opt'] = self.encoder_opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state['obs_shape']) != self.obs_shape or state['action_dim'] != self.action_dim:
            raise ValueError(f'checkpoint agent has obs_shape {tuple(state["obs_shape"])}, '
                             f'action_dim {state["action_dim"]}; this agent {self.obs_shape}, '
                             f'{self.action_dim}: build the agent from the same env')
        critic, target, critic_opt = state['critic'], state['critic_target'], state['critic_opt']
        if 'w2' in critic:  # a checkpoint from before the two-head critic: same function
            names = [n for n, _ in self.critic.named_parameters()]
            critic, target = unstack_critic(critic), unstack_critic(target)
            critic_opt = _unstack_critic_opt(critic_opt, names)
        self.encoder.load_state_dict(state['encoder'])
        self.actor.load_state_dict(state['actor'])
        self.critic.load_state_dict(critic)
        self.critic_target.load_state_dict(target)
        self.actor_opt.load_state_dict(state['actor_opt'])
        self.critic_opt.load_state_dict(critic_opt)
        if self.encoder_opt is not None:
            self.encoder_opt.load_state_dict(state['encoder_opt'])
