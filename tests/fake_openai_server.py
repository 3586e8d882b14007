"""A small local OpenAI-compatible HTTP server that replays scripted replies (tests, demos).

``POST /v1/chat/completions`` answers with the next step of a script; ``GET /v1/models`` lists
one model. A step is a dict:

* ``{'reply': text, 'finish_reason': 'stop'}``: a normal completion with ``usage`` (tokens
  estimated as characters / 4);
* ``{'status': 429 | 500 | ..., 'retry_after_ms': 10}``: an error response (JSON error body);
* ``{'hang_s': 5.0}``: wait that long before answering with the step's reply (or nothing), to
  provoke client timeouts;
* ``{'raw': text}``: a 200 response with this exact body (e.g. truncated JSON);
* or a callable ``body -> step`` (for replies that depend on the request).

When the script is exhausted, ``responder(body)`` (if given) makes the step, else a 500 error
says so. Every request body is kept in ``requests`` (with whether an Authorization header came).
Runs in a daemon thread on 127.0.0.1 with an ephemeral port; also ``python
tests/fake_openai_server.py --reply TEXT`` for manual use. Standard library only. A test tool,
not part of the shipped packages.
"""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import threading
import time
from typing import Any

Step = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _prompt_text(body: dict[str, Any]) -> str:
    out = []
    for m in body.get('messages', []):
        c = m.get('content', '')
        out.append(c if isinstance(c, str) else ' '.join(p.get('text', '') for p in c))
    return '\n'.join(out)


class FakeOpenAIServer:
    """Scripted OpenAI-compatible server; use as a context manager or start()/stop()."""

    def __init__(self, script: list[Step] | None = None,
                 responder: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 model: str = 'fake-model', host: str = '127.0.0.1', port: int = 0) -> None:
        self.model = model
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Step] = deque(script or [])
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """'http://127.0.0.1:<port>/v1', the value for OpenAI(base_url=...)."""
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}/v1'

    def push(self, *steps: Step) -> None:
        """Append steps to the script."""
        with self._lock:
            self._script.extend(steps)

    @property
    def pending(self) -> int:
        """Script steps not consumed yet."""
        with self._lock:
            return len(self._script)

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name='fake-openai')
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_step(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            step = self._script.popleft() if self._script else None
        if step is None:
            if self.responder is None:
                return {'status': 500, 'message': 'fake server script exhausted'}
            step = self.responder
        return step(body) if callable(step) else step

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, fmt: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None
                      ) -> None:
                try:
                    self.send_response(status)
                    self.send_header('Content-Type', 'application/json')
                    self.send_header('Content-Length', str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to do

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.rstrip('/').endswith('/models'):
                    self._send(200, json.dumps({'object': 'list', 'data': [
                        {'id': server.model, 'object': 'model', 'owned_by': 'fake'}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get('Content-Length', 0))
                try:
                    body = json.loads(self.rfile.read(length) or b'{}')
                except json.JSONDecodeError:
                    self._send(400, b'{"error": {"message": "request body is not JSON"}}')
                    return
                if not self.path.rstrip('/').endswith('/chat/completions'):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                body['_authorization_present'] = bool(self.headers.get('Authorization'))
                step = server._next_step(body)
                if step.get('hang_s'):
                    time.sleep(float(step['hang_s']))
                    if 'reply' not in step:
                        return  # never answers within the client's patience
                if 'status' in step and step['status'] != 200:
                    headers = {}
                    if 'retry_after_ms' in step:
                        headers['retry-after-ms'] = str(step['retry_after_ms'])
                    err = {'error': {'message': step.get('message', f"fake {step['status']}"),
                                     'type': 'fake_error', 'code': step['status']}}
                    self._send(int(step['status']), json.dumps(err).encode(), headers)
                    return
                if 'raw' in step:
                    self._send(200, str(step['raw']).encode())
                    return
                reply = str(step.get('reply', ''))
                prompt_tokens = _tokens(_prompt_text(body))
                completion_tokens = _tokens(reply)
                payload = {
                    'id': f'chatcmpl-fake-{len(server.requests)}', 'object': 'chat.completion',
                    'created': int(time.time()), 'model': body.get('model', server.model),
                    'choices': [{'index': 0, 'finish_reason': step.get('finish_reason', 'stop'),
                                 'message': {'role': 'assistant', 'content': reply}}],
                    'usage': {'prompt_tokens': prompt_tokens,
                              'completion_tokens': completion_tokens,
                              'total_tokens': prompt_tokens + completion_tokens},
                }
                self._send(200, json.dumps(payload).encode())

        return Handler


def main() -> None:
    """Serve a fixed reply (or a JSON script file) until interrupted."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--reply', default='{"ranking": [[0], [1]]}')
    ap.add_argument('--script', help='JSON file with a list of steps')
    args = ap.parse_args()
    script = json.load(open(args.script)) if args.script else []
    with FakeOpenAIServer(script, responder=lambda _: {'reply': args.reply},
                          port=args.port) as srv:
        print(srv.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == '__main__':
    main()
