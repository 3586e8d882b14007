"""Service calls that survive a lost reply without repeating the work behind it.

Why: a ROS 2 service reply can be lost. With Fast DDS the server's reply writer must have
matched the client's reply reader when the reply is sent; ``wait_for_service`` only tells the
client that the server's *request* reader has matched, so on a loaded machine the first reply
can go out before discovery finishes, and rmw_fastrtps drops it ("failed to send response
(timeout)"). The caller then waits for its whole deadline (minutes for an LLM call) for a
reply that will never come.

The protocol (the LLM services of ``selfalign_interfaces``): each request carries a
``request_id``, one per logical call; the caller re-sends the same request, with the same id,
at growing intervals until a real answer arrives or its deadline passes
(``call_with_resend``). The server runs the work once per id (``AnswerOnce``): a re-send
while the first call still runs is answered at once with ``pending: true`` ("ask again
later"), a re-send after it finished gets the stored answer. So a lost reply costs one
re-send interval, not the deadline, and an LLM call is never made (or billed) twice. A request
without an id (``ros2 service call`` by hand, an older client) is served as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
import math
import threading
import time
from typing import Any
import uuid

__all__ = ['AnswerOnce', 'call_with_resend', 'RESEND_AFTER_S', 'RESEND_MAX_S']

#: first re-send after this many seconds without an answer; each later one waits twice as long
RESEND_AFTER_S = 10.0
#: ... but never longer than this between two re-sends
RESEND_MAX_S = 60.0


class AnswerOnce:
    """Wrap a service handler so each ``request_id`` is answered by one run of it.

    ``keep`` finished answers are kept (oldest dropped first) for late re-sends. A handler that
    raises forgets its id, so a re-send runs it again (nothing was answered).
    """

    def __init__(self, keep: int = 64, log: Callable[[str], None] | None = None) -> None:
        self.keep = int(keep)
        self.log = log  # told about each re-send answered without running the handler
        self._lock = threading.Lock()
        #: request_id -> the finished response, or None while the first call runs
        self._answers: OrderedDict[str, Any] = OrderedDict()
        self.runs = 0  # handler runs (for tests and logs)
        self.resends = 0  # requests answered without running the handler

    def __call__(self, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def serve(request: Any, response: Any) -> Any:
            rid = getattr(request, 'request_id', '')
            if not rid:
                return handler(request, response)
            with self._lock:
                if rid in self._answers:
                    self.resends += 1
                    answer = self._answers[rid]
                    if self.log is not None:
                        self.log(f'a re-send of request {rid}: answered from the first call '
                                 f'({"its stored answer" if answer is not None else "pending"})')
                    if answer is not None:
                        return answer
                    response.success, response.pending = False, True
                    response.message = (f'request {rid} is still being answered; '
                                        'ask again later')
                    return response
                self._answers[rid] = None
                self.runs += 1
            try:
                answer = handler(request, response)
            except BaseException:
                with self._lock:
                    self._answers.pop(rid, None)
                raise
            with self._lock:
                self._answers[rid] = answer
                finished = [k for k, v in self._answers.items() if v is not None]
                for old in finished[:max(0, len(self._answers) - self.keep)]:
                    del self._answers[old]
            return answer
        return serve


def call_with_resend(client: Any, request: Any, timeout_s: float, *,
                     resend_after_s: float = RESEND_AFTER_S,
                     resend_max_s: float = RESEND_MAX_S,
                     stop: threading.Event | None = None) -> tuple[Any | None, str]:
    """Call ``client`` (an rclpy Client served by someone else's executor) from a thread that
    may block; (reply, '') or (None, why). Sets ``request.request_id`` when empty; re-sends
    the same request every ``resend_after_s`` (doubling up to ``resend_max_s``) until a reply
    that is not ``pending`` arrives, ``timeout_s`` passes or ``stop`` is set. A request type
    without a ``request_id`` is sent once (a re-send could repeat its effect)."""
    if not hasattr(request, 'request_id'):
        resend_after_s = math.inf
    elif not request.request_id:
        request.request_id = uuid.uuid4().hex
    ready = threading.Event()
    futures: list[Any] = []

    def send() -> None:
        future = client.call_async(request)
        future.add_done_callback(lambda _f: ready.set())
        futures.append(future)

    deadline = time.monotonic() + timeout_s
    interval = resend_after_s
    next_send = time.monotonic() + interval
    send()
    try:
        while True:
            for future in [f for f in futures if f.done()]:
                futures.remove(future)
                reply = future.result()
                if reply is not None and not getattr(reply, 'pending', False):
                    return reply, ''
            if stop is not None and stop.is_set():
                return None, 'stopped'
            now = time.monotonic()
            if now >= deadline:
                return None, f'no reply within {timeout_s:g} s'
            if now >= next_send:
                send()
                interval = min(2.0 * interval, resend_max_s)
                next_send = now + interval
            ready.clear()
            if any(f.done() for f in futures):
                continue
            wait_s = min(deadline, next_send) - time.monotonic()
            ready.wait(max(0.0, wait_s if stop is None else min(wait_s, 0.5)))
    finally:
        for future in futures:  # replies that may still come are no longer awaited
            client.remove_pending_request(future)
