"""LLM settings of a run (one frozen dataclass) and the factory that builds the client from them.

llm_node maps its ROS parameters onto ``LLMConfig``; the all-in-one runner loads it from YAML.
The settings of the OpenAI-compatible backend are its own ``OpenAIConfig`` (held, not repeated,
here); their flat names (model, base_url, ...) are what llm_node and ``from_dict`` take. The API
key is deliberately not a field: it comes from OPENAI_API_KEY only. Pure: no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
import math
from typing import Any

from selfalign_llm.backends.base import Backend
from selfalign_llm.backends.openai_backend import OpenAIConfig
from selfalign_llm.client import ClientConfig, LLMClient
from selfalign_llm.transcript import Transcript

BACKENDS = ('scripted', 'openai', 'replay')


@dataclass(frozen=True)
class LLMConfig:
    """Which LLM answers and how patiently."""

    backend: str = 'scripted'
    """'scripted' (simulated teacher, offline), 'openai' (any OpenAI-compatible server) or
    'replay' (answers from a recorded transcript.jsonl)."""
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    """The openai backend's settings (model, base_url, temperature, timeout_s, max_retries,
    max_tokens, vision)."""
    outer_retries: int = 2
    """Client-level retries after a transport failure (each one a transcript line)."""
    retry_backoff_s: float = 2.0
    """First outer-retry wait, s (doubles)."""
    llm_call_deadline_s: float = 300.0
    """The whole budget of one role call (every request, retry, re-ask, repair and wait), s.
    Shared in llm.yaml's ``/**`` block: reward_node and alignment_node wait this plus a margin."""
    max_reasks: int = 2
    """Re-asks after a reply that does not parse."""
    max_repairs: int = 3
    """Repair rounds after a reward template fails validation."""
    transcript_path: str = ''
    """Where this run's transcript.jsonl goes; empty = memory only."""
    replay_path: str = ''
    """Transcript to replay (backend 'replay'); must differ from transcript_path."""
    teacher_beta: float = 20.0
    """Scripted teacher: Boltzmann inverse temperature over progress; <= 0 means noiseless."""
    teacher_mistake_rate: float = 0.1
    """Scripted teacher: expected fraction of pairs ranked wrongly (0 to 0.5)."""
    teacher_tie_margin: float = 0.05
    """Scripted teacher: progress difference within which neighbours are tied."""
    seed: int = 0
    """Seed of the scripted teacher."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LLMConfig:
        """Config from one flat dict (YAML, ROS parameters): the openai backend's settings by
        their own names beside the others; ValueError names unknown keys."""
        own = {f.name for f in fields(cls)} - {'openai'}
        backend = {f.name for f in fields(OpenAIConfig)}
        unknown = sorted(set(values) - own - backend)
        if unknown:
            raise ValueError(f'unknown LLM settings {unknown}; valid: {sorted(own | backend)}')
        return cls(openai=OpenAIConfig(**{k: v for k, v in values.items() if k in backend}),
                   **{k: v for k, v in values.items() if k in own})

    @property
    def vision(self) -> bool:
        return self.openai.vision

    def flat(self) -> dict[str, Any]:
        """The settings as one flat dict (``from_dict``'s input)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != 'openai'}
        out.update({f.name: getattr(self.openai, f.name) for f in fields(OpenAIConfig)})
        return out


def make_backend(cfg: LLMConfig) -> Backend:
    """The backend named by ``cfg.backend``; ValueError for a bad name or missing path."""
    if cfg.backend == 'scripted':
        from selfalign_llm.backends.scripted import ScriptedTeacher, TeacherConfig

        beta = cfg.teacher_beta if cfg.teacher_beta > 0 else math.inf
        return ScriptedTeacher(TeacherConfig(beta=beta, mistake_rate=cfg.teacher_mistake_rate,
                                             tie_margin=cfg.teacher_tie_margin, seed=cfg.seed))
    if cfg.backend == 'openai':
        from selfalign_llm.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(cfg.openai)
    if cfg.backend == 'replay':
        from selfalign_llm.backends.replay import ReplayBackend

        if not cfg.replay_path:
            raise ValueError("backend 'replay' needs replay_path (the transcript.jsonl to replay)")
        if cfg.transcript_path and cfg.replay_path == cfg.transcript_path:
            raise ValueError('replay_path and transcript_path are the same file; write the '
                             'replayed run to a new transcript_path')
        return ReplayBackend(cfg.replay_path)
    raise ValueError(f'unknown backend {cfg.backend!r}; choose one of {BACKENDS}')


def make_client(cfg: LLMConfig) -> LLMClient:
    """LLMClient over ``make_backend(cfg)`` writing to ``cfg.transcript_path``."""
    return LLMClient(make_backend(cfg), Transcript(cfg.transcript_path or None), ClientConfig(
        max_reasks=cfg.max_reasks, max_repairs=cfg.max_repairs, outer_retries=cfg.outer_retries,
        retry_backoff_s=cfg.retry_backoff_s, call_deadline_s=cfg.llm_call_deadline_s))
