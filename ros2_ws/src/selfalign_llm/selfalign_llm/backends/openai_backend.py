"""OpenAI-compatible chat backend over the official ``openai`` client (any base_url).

The API key comes only from the environment variable OPENAI_API_KEY, never from parameters or
files; it is not logged and never reaches the transcript. For a local server (base_url on
localhost) without a key, a dummy key is sent. Rate limits (429), server errors (5xx) and
timeouts are retried with exponential backoff by the client itself (``max_retries``); the
caller (``selfalign_llm.client``) adds an outer bounded retry and records every attempt.
With ``vision`` on, key frames go along as PNG data URLs. Pure: no rclpy.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
import os
from typing import Any
from urllib.parse import urlparse

import numpy as np

from selfalign_llm.backends.base import BackendError, Completion, Request

#: Environment variable holding the API key (the only place it is read from).
API_KEY_ENV = 'OPENAI_API_KEY'
#: Key sent to local servers that need none.
DUMMY_KEY = 'not-needed'
_LOCAL_HOSTS = ('localhost', '127.0.0.1', '::1', '0.0.0.0')


@dataclass(frozen=True)
class OpenAIConfig:
    """Settings of the OpenAI-compatible backend (no key here: it comes from the environment)."""

    model: str = 'gpt-4o'
    """Model name sent to the server and recorded in the transcript."""
    base_url: str = ''
    """Server URL, e.g. http://127.0.0.1:8000/v1; empty = the client's default (api.openai.com)."""
    temperature: float = 0.0
    """Sampling temperature; 0 for the most reproducible replies."""
    timeout_s: float = 60.0
    """Per-request timeout, s (the client's read/connect timeout)."""
    max_retries: int = 2
    """Retries inside the openai client (429/5xx/timeouts, with its exponential backoff)."""
    max_tokens: int = 0
    """Completion token limit; 0 = server default."""
    vision: bool = False
    """Send key frames (if the caller has any) as images."""


def is_local(base_url: str) -> bool:
    """True when ``base_url`` points at this machine."""
    return bool(base_url) and (urlparse(base_url).hostname or '') in _LOCAL_HOSTS


def resolve_api_key(base_url: str) -> str:
    """The key from OPENAI_API_KEY; a dummy for local servers; else a clear error."""
    key = os.environ.get(API_KEY_ENV, '')
    if key:
        return key
    if is_local(base_url):
        return DUMMY_KEY
    raise BackendError(f'no API key: set the environment variable {API_KEY_ENV} (never a '
                       'parameter), or point base_url at a local OpenAI-compatible server',
                       outcome='config_error', retryable=False)


def png_data_url(image: np.ndarray) -> str:
    """uint8 (H, W, 3) RGB -> 'data:image/png;base64,...'."""
    import cv2  # only vision runs need opencv

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'key frames must be uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}')
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(img[:, :, ::-1]))
    if not ok:
        raise ValueError('PNG encoding of a key frame failed')
    return 'data:image/png;base64,' + base64.b64encode(buf.tobytes()).decode('ascii')


def with_images(messages: list[dict[str, Any]], images: list[np.ndarray],
                labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Messages with ``images`` appended as image parts to the last user message, each after
    a text part with its label when ``labels`` are given."""
    if not images:
        return messages
    out = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(out) if m['role'] == 'user')
    text = out[last]['content']
    parts = [{'type': 'text', 'text': text}] if isinstance(text, str) else list(text)
    for k, im in enumerate(images):
        if labels and labels[k]:
            parts.append({'type': 'text', 'text': labels[k]})
        parts.append({'type': 'image_url', 'image_url': {'url': png_data_url(im)}})
    out[last]['content'] = parts
    return out


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server."""

    name = 'openai'

    def __init__(self, config: OpenAIConfig) -> None:
        import openai

        self.config = config
        self.model = config.model
        self.vision = config.vision
        self._openai = openai
        kwargs: dict[str, Any] = {'api_key': resolve_api_key(config.base_url),
                                  'timeout': float(config.timeout_s),
                                  'max_retries': int(config.max_retries)}
        if config.base_url:
            kwargs['base_url'] = config.base_url
        self._client = openai.OpenAI(**kwargs)

    def complete(self, request: Request) -> Completion:
        """One chat completion; BackendError (outcome + retryable) on any failure."""
        oa = self._openai
        messages = request.messages
        if self.vision and request.images:
            messages = with_images(messages, request.images, request.image_labels)
        kwargs: dict[str, Any] = {'model': self.config.model, 'messages': messages,
                                  'temperature': float(self.config.temperature)}
        if self.config.max_tokens > 0:
            kwargs['max_tokens'] = int(self.config.max_tokens)
        if request.timeout_s is not None:  # every client retry fits in the call's deadline
            tries = int(self.config.max_retries) + 1
            kwargs['timeout'] = max(min(float(self.config.timeout_s),
                                        request.timeout_s / tries), 0.01)
        try:
            resp = self._client.chat.completions.create(**kwargs)
        except oa.APITimeoutError:
            raise BackendError(f'no reply within timeout_s={self.config.timeout_s:g} s '
                               f'(after {self.config.max_retries} client retries)',
                               outcome='timeout') from None
        except oa.APIConnectionError as exc:
            raise BackendError(f'cannot reach {self.config.base_url or "the API"}: {exc}',
                               outcome='connection_error') from None
        except oa.AuthenticationError:
            # The server's message may quote part of the key: do not pass it on.
            raise BackendError(f'authentication failed (HTTP 401): check {API_KEY_ENV}',
                               outcome='auth_error', retryable=False) from None
        except oa.RateLimitError as exc:
            raise BackendError(f'rate limited (HTTP 429) after {self.config.max_retries} client '
                               f'retries: {exc.message}', outcome='rate_limited') from None
        except oa.APIStatusError as exc:
            retryable = exc.status_code >= 500 or exc.status_code in (408, 409)
            raise BackendError(f'HTTP {exc.status_code}: {exc.message}', outcome='http_error',
                               retryable=retryable) from None
        except (oa.APIError, ValueError) as exc:  # malformed body, validation
            raise BackendError(f'unusable response: {exc}', outcome='bad_response') from None
        if not getattr(resp, 'choices', None):
            raise BackendError('response has no choices', outcome='bad_response')
        choice = resp.choices[0]
        text = choice.message.content if choice.message is not None else None
        if text is None:
            raise BackendError('response message has no text content', outcome='bad_response')
        usage = getattr(resp, 'usage', None)
        return Completion(
            text=text, model=getattr(resp, 'model', None) or self.config.model,
            prompt_tokens=int(getattr(usage, 'prompt_tokens', 0) or 0),
            completion_tokens=int(getattr(usage, 'completion_tokens', 0) or 0),
            finish_reason=str(choice.finish_reason or ''))
