"""Replay backend: answers calls from a recorded transcript.jsonl, in order, with no network.

Each call takes the next recorded call; its role must match (else a ``BackendError`` with
outcome 'replay_mismatch' that names the line, the recorded and the requested role). Recorded
transport failures (timeouts, 429, 5xx) are re-raised as the same outcome, so the client's retry
path, and hence the whole run, is reproduced exactly. With ``strict_prompts`` the prompt
messages must also match the recording. Pure: no rclpy.
"""

from __future__ import annotations

import os
from pathlib import Path
import threading

from selfalign_llm.backends.base import BackendError, Completion, Request
from selfalign_llm.transcript import _strip_images, read_transcript

#: Outcomes recorded for calls that produced no reply (replayed as BackendError).
TRANSPORT_OUTCOMES = ('http_error', 'rate_limited', 'timeout', 'connection_error',
                      'bad_response', 'auth_error', 'config_error')


class ReplayBackend:
    """Replays ``path``'s records one call at a time."""

    name = 'replay'

    def __init__(self, path: str | os.PathLike, strict_prompts: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'replay transcript {self.path} does not exist; set '
                                    'transcript to the transcript.jsonl of the run to replay')
        self._records = read_transcript(self.path)
        self.strict_prompts = strict_prompts
        self._next = 0
        self._lock = threading.Lock()
        models = [r.get('model', '') for r in self._records if r.get('model')]
        self.model = f"replay:{models[0] if models else 'unknown'}"

    def complete(self, request: Request) -> Completion:
        """The next recorded reply for ``request.role`` (or its recorded failure)."""
        with self._lock:
            n = self._next
            if n >= len(self._records):
                raise BackendError(f'replay of {self.path} is exhausted after {n} calls; the run '
                                   f'asked for one more {request.role!r} call',
                                   outcome='replay_mismatch', retryable=False)
            rec = self._records[n]
            if rec['role'] != request.role:
                raise BackendError(f'replay mismatch at {self.path} call {n}: recorded role '
                                   f"{rec['role']!r}, requested {request.role!r}",
                                   outcome='replay_mismatch', retryable=False)
            if self.strict_prompts and rec.get('messages') != _strip_images(request.messages):
                raise BackendError(f'replay mismatch at {self.path} call {n} ({request.role}): '
                                   'the prompt differs from the recorded one',
                                   outcome='replay_mismatch', retryable=False)
            self._next = n + 1
        model = rec.get('model') or self.model
        if rec.get('outcome') in TRANSPORT_OUTCOMES or rec.get('reply') is None:
            raise BackendError(f"replayed failure: {rec.get('error', '')}",
                               outcome=rec.get('outcome', 'http_error'),
                               retryable=bool(rec.get('retryable', True)))
        return Completion(text=rec['reply'], model=model,
                          prompt_tokens=int(rec.get('prompt_tokens', 0)),
                          completion_tokens=int(rec.get('completion_tokens', 0)),
                          finish_reason=rec.get('finish_reason', 'stop') or 'stop')
