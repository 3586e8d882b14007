"""The run's LLM transcript: one JSON line per call in transcript.jsonl, plus running totals.

A line holds: time (ISO, UTC) and unix time, role, attempt, the prompt (chat messages), the
reply, backend, model, latency_s, prompt/completion tokens, outcome ('ok', 'parse_error',
'invalid_template', 'http_error', 'rate_limited', 'timeout', 'connection_error', ...), and the
error text. Image parts are replaced by a short placeholder (size + sha256). The API key never
enters a line: values of secret environment variables (OPENAI_API_KEY) are scrubbed from every
string before writing, as a second guard behind never passing them in. Thread-safe. Pure.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, UTC
import hashlib
import json
import os
from pathlib import Path
import threading
import time
from typing import Any

#: Environment variables whose values must never be written.
SECRET_ENV_VARS = ('OPENAI_API_KEY',)

#: Outcomes that mean the call produced a usable reply.
OK_OUTCOMES = ('ok',)


def _secrets() -> list[str]:
    return [v for v in (os.environ.get(k, '') for k in SECRET_ENV_VARS) if len(v) >= 4]


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """Copy of ``value`` (JSON-like) with secret strings replaced by '<redacted>'."""
    secrets = _secrets() if secrets is None else secrets
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, '<redacted>')
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def _strip_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with image data URLs replaced by '<image ... bytes sha256=...>' placeholders."""
    out = []
    for m in messages:
        content = m.get('content')
        if isinstance(content, list):
            parts = []
            for p in content:
                if p.get('type') == 'image_url':
                    url = p.get('image_url', {}).get('url', '')
                    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
                    parts.append({'type': 'image_url',
                                  'image_url': {'url': f'<image {len(url)} chars '
                                                       f'sha256={digest}>'}})
                else:
                    parts.append(p)
            m = {**m, 'content': parts}
        out.append(m)
    return out


class Transcript:
    """Appends call records to ``path`` (JSON lines); ``path=None`` keeps them in memory only."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []

    def record(self, *, call: int, role: str, messages: list[dict[str, Any]], reply: str | None,
               outcome: str, attempt: int, backend: str, model: str, latency_s: float,
               prompt_tokens: int = 0, completion_tokens: int = 0, error: str = '',
               finish_reason: str = '', retryable: bool = True,
               images: list[Any] | None = None) -> dict[str, Any]:
        """Append one call record (written and flushed at once) and return it.

        ``images``: key frames sent with the call (uint8 arrays); recorded as shape + sha256.
        """
        now = time.time()
        entry = scrub({
            'time': datetime.fromtimestamp(now, UTC).isoformat(timespec='milliseconds'),
            'unix_time': round(now, 3), 'call': int(call), 'role': role, 'attempt': int(attempt),
            'backend': backend, 'model': model, 'outcome': outcome,
            'latency_s': round(float(latency_s), 4), 'prompt_tokens': int(prompt_tokens),
            'completion_tokens': int(completion_tokens), 'finish_reason': finish_reason,
            'error': error, 'retryable': bool(retryable),
            'messages': _strip_images(messages), 'reply': reply,
            'images': [{'shape': list(getattr(im, 'shape', ())),
                        'sha256': hashlib.sha256(bytes(memoryview(im))).hexdigest()[:16]}
                       for im in (images or [])],
        })
        with self._lock:
            entry['index'] = len(self._records)
            self._records.append(entry)
            if self.path is not None:
                with self.path.open('a', encoding='utf-8') as fh:
                    fh.write(json.dumps(entry, ensure_ascii=False) + '\n')
                    fh.flush()
        return entry

    @property
    def records(self) -> list[dict[str, Any]]:
        """Copies of the records written by this object, in order."""
        with self._lock:
            return list(self._records)

    def totals(self) -> dict[str, Any]:
        """Totals of this run: calls, ok, failures, tokens, per outcome and per role."""
        return summarize(self.records)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over call records: calls, ok, failures, prompt/completion tokens, by outcome/role."""
    outcomes = Counter(r['outcome'] for r in records)
    ok = sum(outcomes[o] for o in OK_OUTCOMES)
    return {
        'calls': len(records), 'ok': ok, 'failures': len(records) - ok,
        'prompt_tokens': sum(int(r.get('prompt_tokens', 0)) for r in records),
        'completion_tokens': sum(int(r.get('completion_tokens', 0)) for r in records),
        'latency_s': round(sum(float(r.get('latency_s', 0.0)) for r in records), 3),
        'by_outcome': dict(sorted(outcomes.items())),
        'by_role': dict(sorted(Counter(r['role'] for r in records).items())),
        'models': sorted({r.get('model', '') for r in records}),
    }


def read_transcript(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All call records of a transcript.jsonl; ValueError names a line that is not JSON."""
    out = []
    with Path(path).open(encoding='utf-8') as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f'{path}:{n} is not a JSON line ({exc.msg})') from None
    return out
