"""What every LLM backend offers: one chat completion per ``Request``, or a ``BackendError``.

A backend turns chat messages into reply *text*; parsing, re-asking, repair and the transcript
are the client's (``selfalign_llm.client``), so the OpenAI backend, the scripted teacher and
the replay of a transcript all go through the same parser. ``Request.context`` carries the
structured inputs (task, episode features, parameter table) that only the scripted teacher
reads; a real LLM sees only the messages. Pure: no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: The roles (kinds of call). 'repair' is a propose call that fixes rejected code.
ROLES = ('propose', 'repair', 'rank', 'analyze_failure')


@dataclass
class Request:
    """One chat call.

    role: one of ROLES. messages: OpenAI chat messages (role/content). context: structured
    inputs for the scripted teacher. images: optional key frames, uint8 (H, W, 3) RGB, sent
    only by vision backends.
    """

    role: str
    messages: list[dict[str, Any]]
    context: dict[str, Any] = field(default_factory=dict)
    images: list[Any] = field(default_factory=list)
    image_labels: list[str] = field(default_factory=list)
    """Text placed before each image (e.g. 'Episode 2, step 50:'); empty = no labels."""
    timeout_s: float | None = None
    """What is left of the role call's deadline, s; a backend finishes (or fails) within it.
    None = the backend's own timeout."""


@dataclass(frozen=True)
class Completion:
    """A reply: text, the model that wrote it, token usage, finish reason ('length' = cut)."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = 'stop'


class BackendError(RuntimeError):
    """A call that produced no reply. ``outcome`` is the transcript's word for it ('http_error',
    'rate_limited', 'timeout', 'connection_error', 'replay_mismatch', ...); ``retryable`` says
    whether asking again may help."""

    def __init__(self, message: str, outcome: str = 'http_error', retryable: bool = True):
        super().__init__(message)
        self.outcome = outcome
        self.retryable = retryable


class Backend(Protocol):
    """A chat backend. ``name`` ('openai', 'scripted', 'replay'), ``model`` as reported."""

    name: str
    model: str

    def complete(self, request: Request) -> Completion:
        """Reply to ``request``; raise BackendError when no reply can be had."""
        ...
