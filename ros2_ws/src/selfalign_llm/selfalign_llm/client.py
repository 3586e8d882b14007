"""The LLM roles over any backend: propose a reward, rank trajectories, analyse a failure.

``LLMClient`` is the pure facade used by llm_node and by the all-in-one runner. Every role goes
the same way: build the prompt (``prompts``), call the backend with an outer bounded retry and
backoff on transport failures, parse the reply strictly (``parse``); a reply that does not parse
is re-asked with the parse error (``max_reasks``); a reward template that fails validation
(``selfalign_reward.sandbox.validate_template``) goes back with the repair prompt
(``max_repairs``). Every backend call, successful or not, is one transcript line. When the
bounds are exhausted an ``LLMError`` says what happened; nothing crashes. Pure: no rclpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
import functools
import itertools
import threading
import time
from typing import Any, TypeVar

import numpy as np

from selfalign_llm import prompts
from selfalign_llm.backends.base import Backend, BackendError, Completion, Request
from selfalign_llm.describe import describe_episode, episode_features
from selfalign_llm.parse import (
    parse_failure_analysis,
    parse_proposal,
    parse_ranking,
    ParseError,
    ranks_from_groups,
)
from selfalign_llm.transcript import scrub, Transcript
from selfalign_reward.template import RewardTemplate, TemplateError

T = TypeVar('T')


@dataclass(frozen=True)
class ClientConfig:
    """Bounds of the client's loops."""

    max_reasks: int = 2
    """Re-asks after a reply that does not parse (per role call)."""
    max_repairs: int = 3
    """Repair rounds after a reward template fails validation."""
    outer_retries: int = 2
    """Retries after a transport failure (on top of the backend's own retries)."""
    retry_backoff_s: float = 2.0
    """First outer-retry wait, s; doubles each retry."""
    call_deadline_s: float = 300.0
    """The whole budget of one role call (a proposal with its repairs, a ranking, a failure
    analysis): every request, retry, re-ask and wait fits in it, s."""
    require_plan: bool = True
    """Require the step plan before the code in propose replies
    (docs/method.md "Reward templates")."""


def _one_deadline(method: Callable[..., T]) -> Callable[..., T]:
    """A public role call: everything it does shares ``config.call_deadline_s``."""
    @functools.wraps(method)
    def wrapper(self: LLMClient, *args: Any, **kwargs: Any) -> T:
        with self._deadline():
            return method(self, *args, **kwargs)
    return wrapper


class LLMError(RuntimeError):
    """A role call that produced no usable answer within its bounds; ``str()`` says why."""

    def __init__(self, role: str, message: str) -> None:
        super().__init__(scrub(f'{role}: {message}'))  # errors get logged: never the key
        self.role = role


@dataclass(frozen=True)
class Ranking:
    """A ranking: ranks[i] of episode i (0 best, ties share a rank), best-first groups, and the
    descriptions the LLM saw."""

    ranks: list[int]
    groups: list[list[int]]
    descriptions: list[str]
    model: str


class _RejectedError(Exception):
    """A parsed reply whose template failed validation (carries both for the repair)."""

    def __init__(self, error: str, parsed: Any) -> None:
        super().__init__(error)
        self.error = error
        self.parsed = parsed


def _default_validate(template: str) -> RewardTemplate:
    from selfalign_reward.sandbox import validate_template

    return validate_template(template)


class LLMClient:
    """The three LLM roles over ``backend``, writing every call to ``transcript``.

    ``validate``: source -> RewardTemplate, raising TemplateError (default: the reward
    sandbox, ``validate_template``). ``sleep`` is injectable for the backoff.
    """

    def __init__(self, backend: Backend, transcript: Transcript | None = None,
                 config: ClientConfig | None = None,
                 validate: Callable[[str], RewardTemplate] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.backend = backend
        self.transcript = transcript if transcript is not None else Transcript(None)
        self.config = config or ClientConfig()
        self._validate = validate or _default_validate
        self._sleep = sleep
        self._calls = itertools.count()
        self._lock = threading.Lock()
        self._last_model = backend.model
        self._local = threading.local()  # this thread's role call deadline (monotonic s)

    @property
    def model(self) -> str:
        """The model that answered last (the backend's model before any call)."""
        return self._last_model

    def usage(self) -> dict[str, Any]:
        """Totals of this client's calls: calls, ok, failures, tokens, by outcome and role."""
        return self.transcript.totals()

    # ---- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _deadline(self) -> Iterator[None]:
        """The outermost role call on this thread sets the deadline its requests share."""
        if getattr(self._local, 'deadline', None) is not None:
            yield
            return
        self._local.deadline = time.monotonic() + self.config.call_deadline_s
        try:
            yield
        finally:
            self._local.deadline = None

    def _left_s(self) -> float | None:
        deadline = getattr(self._local, 'deadline', None)
        return None if deadline is None else deadline - time.monotonic()

    def _complete(self, call: int, request: Request, attempt: int) -> tuple[Completion, float]:
        """One reply, retrying transport failures; each try is a transcript line."""
        retries = self.config.outer_retries
        for t in range(retries + 1):
            left = self._left_s()
            if left is not None and left <= 0:
                error = f'the call deadline of {self.config.call_deadline_s:g} s is spent'
                self.transcript.record(
                    call=call, role=request.role, messages=request.messages, reply=None,
                    outcome='deadline', attempt=attempt + t, backend=self.backend.name,
                    model=self.backend.model, latency_s=0.0, error=error, retryable=False,
                    images=request.images)
                raise LLMError(request.role, f'no usable reply: {error} (call_deadline_s)')
            if left is not None:
                request = replace(request, timeout_s=left)
            start = time.monotonic()
            try:
                c = self.backend.complete(request)
            except BackendError as exc:
                latency = time.monotonic() - start
                self.transcript.record(
                    call=call, role=request.role, messages=request.messages, reply=None,
                    outcome=exc.outcome, attempt=attempt + t, backend=self.backend.name,
                    model=self.backend.model, latency_s=latency, error=str(exc),
                    retryable=exc.retryable, images=request.images)
                if not exc.retryable or t == retries:
                    raise LLMError(request.role, f'no reply after {t + 1} tries: '
                                   f'{exc.outcome}: {exc}') from None
                wait = self.config.retry_backoff_s * 2 ** t
                left = self._left_s()
                self._sleep(wait if left is None else max(min(wait, left), 0.0))
                continue
            return c, time.monotonic() - start
        raise AssertionError('unreachable')

    def _ask(self, request: Request, parse: Callable[[str], T],
             accept: Callable[[T], Any] | None = None) -> tuple[T, Any]:
        """Ask until the reply parses (bounded); returns (parsed, accept(parsed)).

        ``accept`` may raise TemplateError: recorded as 'invalid_template' and raised as
        _RejectedError for the caller's repair loop.
        """
        call = next(self._calls)
        messages = list(request.messages)
        attempt = 0
        for reask in range(self.config.max_reasks + 1):
            req = Request(request.role, messages, request.context, request.images,
                          request.image_labels)
            c, latency = self._complete(call, req, attempt)
            attempt += 1
            self._last_model = c.model
            common = dict(call=call, role=req.role, messages=messages, reply=c.text,
                          attempt=attempt - 1, backend=self.backend.name, model=c.model,
                          latency_s=latency, prompt_tokens=c.prompt_tokens,
                          completion_tokens=c.completion_tokens, finish_reason=c.finish_reason,
                          images=req.images)
            try:
                parsed = parse(c.text)
            except ParseError as exc:
                error = str(exc)
                if c.finish_reason == 'length':
                    error += ' (Your reply was cut off at the token limit: answer more briefly.)'
                self.transcript.record(outcome='parse_error', error=error, **common)
                if reask == self.config.max_reasks:
                    raise LLMError(req.role, f'reply still unusable after {reask} re-asks: '
                                   f'{error}') from None
                messages = messages + [{'role': 'assistant', 'content': c.text},
                                       prompts.reask_message(error)]
                continue
            try:
                accepted = accept(parsed) if accept is not None else None
            except TemplateError as exc:
                self.transcript.record(outcome='invalid_template', error=str(exc), **common)
                raise _RejectedError(str(exc), parsed) from None
            self.transcript.record(outcome='ok', **common)
            return parsed, accepted
        raise AssertionError('unreachable')

    # ---- roles ----------------------------------------------------------------------------
    @_one_deadline
    def propose_reward(self, task: str, task_description: str = '', previous_code: str = '',
                       error: str = '') -> tuple[RewardTemplate, str]:
        """A validated reward template for ``task`` and the step plan that came with it.

        With ``previous_code`` and ``error`` it starts by asking for a repair of that code.
        Raises LLMError when no valid template is had within max_reasks / max_repairs.
        """
        ctx = {'task': task}
        cfg = self.config
        plan, code = '', previous_code
        if not previous_code:
            req = Request('propose', prompts.propose_messages(task, task_description), ctx)
            try:
                proposal, template = self._ask(
                    req, lambda r: parse_proposal(r, require_plan=cfg.require_plan),
                    lambda p: self._validate(p.code))
                return template, proposal.plan
            except _RejectedError as rej:
                error, code, plan = rej.error, rej.parsed.code, rej.parsed.plan
        elif not error:
            raise ValueError('previous_code needs the validation error that rejected it')
        for _ in range(cfg.max_repairs):
            req = Request('repair', prompts.repair_messages(task, code, error, task_description),
                          ctx)
            try:
                proposal, template = self._ask(req, lambda r: parse_proposal(r, False),
                                               lambda p: self._validate(p.code))
                return template, plan or proposal.plan
            except _RejectedError as rej:
                error, code = rej.error, rej.parsed.code
        raise LLMError('propose', f'no valid reward template after {cfg.max_repairs} repairs; '
                       f'last validation error: {error}')

    def _images(self, frames: Sequence[np.ndarray] | None,
                episode_frames: Sequence[Sequence[tuple[int, np.ndarray]]] | None
                ) -> tuple[list[np.ndarray], list[str]]:
        """Key frames to send and their labels: none unless the backend has ``vision`` on."""
        if not getattr(self.backend, 'vision', False):
            return [], []
        images = [np.ascontiguousarray(f) for f in frames or []]
        labels = [''] * len(images)
        for i, shots in enumerate(episode_frames or []):
            for step, image in shots:
                images.append(np.ascontiguousarray(image))
                labels.append(f'Episode {i + 1}, step {int(step)}:')
        return images, (labels if any(labels) else [])

    @_one_deadline
    def rank_detailed(self, task: str, episodes: Sequence[Any], task_description: str = '',
                      frames: Sequence[np.ndarray] | None = None,
                      episode_frames: Sequence[Sequence[tuple[int, np.ndarray]]] | None = None
                      ) -> Ranking:
        """Rank ``episodes`` (EpisodeRecords or feature dicts (T, ...)), best first, ties allowed.

        ``frames``: optional key frames, uint8 (H, W, 3); ``episode_frames``: per episode, its
        (step, frame) key frames, each sent after a label 'Episode i, step s:'. Images go only
        to backends with ``vision`` on (recorded in the transcript as shape + sha256).
        """
        if len(episodes) < 2:
            raise ValueError(f'rank needs at least 2 episodes, got {len(episodes)}')
        descriptions = [describe_episode(e, task) for e in episodes]
        ctx = {'task': task, 'features': [episode_features(e) for e in episodes]}
        images, labels = self._images(frames, episode_frames)
        req = Request('rank', prompts.rank_messages(task, descriptions, task_description), ctx,
                      images, labels)
        k = len(episodes)
        groups, _ = self._ask(req, lambda r: parse_ranking(r, k))
        return Ranking(ranks_from_groups(groups, k), groups, descriptions, self.model)

    def rank(self, task: str, episodes: Sequence[Any], task_description: str = '') -> list[int]:
        """ranks[i] of each episode: 0 best, tied episodes share a rank."""
        return self.rank_detailed(task, episodes, task_description).ranks

    @_one_deadline
    def analyze_failure(self, task: str, spec: RewardTemplate,
                        theta: Mapping[str, float] | Sequence[float], episodes: Sequence[Any],
                        success_rate: float, agreement: float, task_description: str = '',
                        episode_frames: Sequence[Sequence[tuple[int, np.ndarray]]] | None = None
                        ) -> tuple[str, dict[str, float]]:
        """(analysis text, {parameter: proposed value inside its range}) for a stuck reward.

        ``theta``: current values by name, or in ``spec.params`` order. ``episode_frames``: as
        for ``rank_detailed`` (vision backends only).
        """
        if not isinstance(theta, Mapping):
            values = list(theta)
            if len(values) != len(spec.params):
                raise ValueError(f'theta has {len(values)} values for {len(spec.params)} '
                                 'parameters')
            theta = {s.name: float(v) for s, v in zip(spec.params, values)}
        missing = [s.name for s in spec.params if s.name not in theta]
        if missing:
            raise ValueError(f'theta misses parameters {missing}')
        params = [{'name': s.name, 'value': float(theta[s.name]), 'lower': s.lower,
                   'upper': s.upper, 'scale': s.scale, 'meaning': s.meaning}
                  for s in spec.params]
        descriptions = [describe_episode(e, task) for e in episodes]
        ctx = {'task': task, 'params': params,
               'features': [episode_features(e) for e in episodes]}
        images, labels = self._images(None, episode_frames)
        req = Request('analyze_failure', prompts.analyze_failure_messages(
            task, spec.code, params, descriptions, success_rate, agreement, task_description),
            ctx, images, labels)
        ranges = {s.name: (s.lower, s.upper) for s in spec.params}
        result, _ = self._ask(req, lambda r: parse_failure_analysis(r, ranges))
        return result
