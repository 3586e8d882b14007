"""Training hyper-parameters of the DrQ-v2 learner as frozen dataclasses (cleanrl style).

One dataclass per component, a docstring per field. ``from_dict`` builds them from plain dicts
(YAML, ROS parameters) and fails with an error that names the field and says what is allowed.
Defaults follow facebookresearch/drqv2 (``cfgs/config.yaml``, the 'easy' task schedule), except
``stddev_steps`` which is shorter because our tasks are learned within tens of thousands of steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import difflib
import re
from typing import Any, TypeVar

T = TypeVar('T')


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the field."""


@dataclass(frozen=True)
class AgentConfig:
    """DrQ-v2 agent (networks, optimisers, exploration, update schedule)."""

    lr: float = 1e-4
    """Adam learning rate of encoder, actor and critic (three optimisers)."""
    feature_dim: int = 50
    """Width of the Linear -> LayerNorm -> Tanh trunk of actor and critic."""
    hidden_dim: int = 1024
    """Width of the two hidden layers of the actor MLP and of each Q head."""
    critic_target_tau: float = 0.01
    """Soft target update rate: target <- (1 - tau) target + tau critic after every update."""
    num_expl_steps: int = 2000
    """Environment steps with uniform random actions in [-1, 1] before the policy acts."""
    update_every_steps: int = 2
    """One gradient update every this many environment steps."""
    updates_per_step: int = 1
    """Gradient updates each time one is due: the update-to-data ratio is
    updates_per_step / update_every_steps (REDQ and DroQ raise it above 1 for sample
    efficiency; each update costs the same CPU)."""
    stddev_init: float = 1.0
    """Exploration noise std at step 0 (drqv2 ``linear(1.0, 0.1, N)`` schedule)."""
    stddev_final: float = 0.1
    """Exploration noise std after ``stddev_steps`` environment steps."""
    stddev_steps: int = 100_000
    """Environment steps over which the std decays linearly from init to final."""
    stddev_clip: float = 0.3
    """Clip of the target-policy smoothing noise and of the actor-update noise."""
    batch_size: int = 256
    """Transitions per gradient update."""
    nstep: int = 3
    """n of the n-step return."""
    discount: float = 0.99
    """Discount gamma per environment step."""
    aug_pad: int = 4
    """Random-shift augmentation padding in pixels (pixels only; 0 disables)."""
    device: str = 'cpu'
    """'cpu', 'cuda' or 'auto' (cuda when available, else cpu)."""
    num_threads: int = 1
    """torch intra-op threads on CPU; 0 leaves torch's default. 1 suits a CPU shared with other
    jobs (2 threads contending with other processes are several times slower); on an idle
    2-core machine 2 threads gave ~1.6-1.7x more updates/s (benchmarks/drqv2_speed.py)."""
    channels_last: bool = True
    """Run the conv encoder in channels-last memory format (faster oneDNN kernels on CPU)."""
    cpu_heap_reuse: bool = True
    """Pixels on CPU: tell glibc to reuse freed heap memory for the large activations instead
    of mapping fresh pages every update (process-wide; see agent.keep_freed_memory_in_heap)."""

    def __post_init__(self) -> None:
        _check(self, 'lr', self.lr > 0, 'must be > 0')
        _check(self, 'feature_dim', self.feature_dim >= 1, 'must be >= 1')
        _check(self, 'hidden_dim', self.hidden_dim >= 1, 'must be >= 1')
        _check(self, 'critic_target_tau', 0 < self.critic_target_tau <= 1, 'must be in (0, 1]')
        _check(self, 'num_expl_steps', self.num_expl_steps >= 0, 'must be >= 0')
        _check(self, 'update_every_steps', self.update_every_steps >= 1, 'must be >= 1')
        _check(self, 'updates_per_step', self.updates_per_step >= 1, 'must be >= 1')
        _check(self, 'stddev_init', self.stddev_init >= 0, 'must be >= 0')
        _check(self, 'stddev_final', self.stddev_final >= 0, 'must be >= 0')
        _check(self, 'stddev_steps', self.stddev_steps >= 1, 'must be >= 1')
        _check(self, 'stddev_clip', self.stddev_clip >= 0, 'must be >= 0')
        _check(self, 'batch_size', self.batch_size >= 1, 'must be >= 1')
        _check(self, 'nstep', self.nstep >= 1, 'must be >= 1')
        _check(self, 'discount', 0 <= self.discount <= 1, 'must be in [0, 1]')
        _check(self, 'aug_pad', self.aug_pad >= 0, 'must be >= 0')
        _check(self, 'device', self.device in ('cpu', 'cuda', 'auto')
               or re.fullmatch(r'cuda:\d+', self.device) is not None,
               "must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
        _check(self, 'num_threads', self.num_threads >= 0, 'must be >= 0')

    def stddev(self, step: int) -> float:
        """Exploration std at environment step ``step`` (linear schedule, then constant)."""
        mix = min(max(step / self.stddev_steps, 0.0), 1.0)
        return (1.0 - mix) * self.stddev_init + mix * self.stddev_final


@dataclass(frozen=True)
class ReplayConfig:
    """Replay buffer (preallocated; memory known up front)."""

    capacity: int = 100_000
    """Time-step slots (transitions + one final observation per episode)."""
    frame_stack: int = 3
    """Frames stacked into one pixel observation at sample time (state observations: ignored)."""
    keep_reward_scale: bool = True
    """When the reward changes (a θ update), multiply sampled rewards by a scale that gives the
    new reward the old one's standard deviation over the stored transitions. A positive scale
    leaves the optimal policy unchanged but keeps the critic's targets at one scale whatever θ
    does: self-alignment moved w_push 2 -> 49, and Q-values of thousands slowed learning. A
    fixed reward is never scaled: dividing the oracle rewards by their own std (the previous
    normalize_reward) left touch and grasp_lift seed 2 at 0 % (docs/tasks.md)."""

    def __post_init__(self) -> None:
        _check(self, 'capacity', self.capacity >= 16, 'must be >= 16')
        _check(self, 'frame_stack', self.frame_stack >= 1, 'must be >= 1')


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop over a gymnasium env."""

    total_env_steps: int = 30_000
    """Environment steps to train for (evaluation steps are not counted)."""
    seed: int = 0
    """Seed of torch, numpy, python random, the replay sampler and the env seed sequence."""
    eval_every_steps: int = 2500
    """Run evaluation episodes every this many environment steps (0: never)."""
    eval_episodes: int = 10
    """Deterministic-policy episodes per evaluation."""
    checkpoint_every_steps: int = 0
    """Checkpoint at the first episode end after every this many env steps (0: never)."""
    run_dir: str = ''
    """Directory for checkpoints; '' disables writing."""
    progress: bool = True
    """Show a tqdm progress bar."""
    metrics_every_updates: int = 1
    """Return update metrics every this many updates (others skip the host copy)."""
    overlap_updates: bool = True
    """With envs that step asynchronously (``step_async``/``step_wait``: a driver over ROS),
    run the gradient updates a step made due while the next command is out, instead of
    before choosing it: the driver steps while the learner computes. The updates and the
    replay they sample are the same; the action of the next step comes from the policy one
    update earlier (benchmarks/run_speed.py, docs/performance.md). No effect on plain envs."""

    def __post_init__(self) -> None:
        _check(self, 'total_env_steps', self.total_env_steps >= 0, 'must be >= 0')
        _check(self, 'eval_every_steps', self.eval_every_steps >= 0, 'must be >= 0')
        _check(self, 'eval_episodes', self.eval_episodes >= 0, 'must be >= 0')
        _check(self, 'checkpoint_every_steps', self.checkpoint_every_steps >= 0, 'must be >= 0')
        _check(self, 'metrics_every_updates', self.metrics_every_updates >= 1, 'must be >= 1')


@dataclass(frozen=True)
class DrQV2Config:
    """Everything a training run needs: agent, replay, loop."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    """Agent hyper-parameters."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """Replay buffer."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Training loop."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DrQV2Config:
        """``{'agent': {...}, 'replay': {...}, 'trainer': {...}}`` -> config (gaps: defaults)."""
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(obj: object, name: str, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigError(f'{type(obj).__name__}.{name} = {getattr(obj, name)!r} {rule}')


def _coerce(owner: str, name: str, typ: Any, value: Any) -> Any:
    where = f'{owner}.{name}'
    if dataclasses.is_dataclass(typ):
        return from_dict(typ, value, _where=where)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f'{where} = {value!r} must be true or false')
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f'{where} = {value!r} must be an integer')
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                return float(value)  # YAML reads 1e-4 as a string
            except (TypeError, ValueError):
                raise ConfigError(f'{where} = {value!r} must be a number') from None
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f'{where} = {value!r} must be a string')
        return value
    return value


_TYPES = {'float': float, 'int': int, 'bool': bool, 'str': str}


def from_dict(cls: type[T], data: dict[str, Any] | None, _where: str = '') -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ``ConfigError``."""
    owner = _where or cls.__name__
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f'{owner} must be a mapping of field -> value, '
                          f'got {type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), fields, n=1)
            hints.append(f'{k!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
        raise ConfigError(f'{owner}: unknown field(s) {", ".join(hints)}; valid fields: '
                          f'{sorted(fields)}')
    kwargs = {}
    for k, v in data.items():
        typ = fields[k].type
        if isinstance(typ, str):
            typ = _TYPES.get(typ) or globals().get(typ, typ)
        kwargs[k] = _coerce(owner, k, typ, v)
    return cls(**kwargs)
