"""Executors for selfalign nodes, and the one ``main()`` every node runs.

Why not rclpy's ``MultiThreadedExecutor`` as shipped: in Jazzy (rclpy 7.1) every ready callback
becomes a ``Task`` kept in the executor's task list until it is done, and
``wait_for_ready_callbacks`` yields again every task that is *not executing and not done*. The
multi-threaded executor only *submits* the task to its thread pool, so a task still queued for a
worker is yielded and submitted again on every wake-up of the wait (each message, each finished
callback). In policy_node (lockstep, a trainer thread busy in Python) 4 subscription tasks piled
up ~2,000 pending submissions; every spin scans that list (``Future.done``), and the spin thread
holding the GIL starves the workers and the trainer, which makes the queue longer still: 97 % of
a core in executor machinery, 3.7 env steps/s, 270 ms of CPU per step
(``benchmarks/policy_node_speed.py``). Upstream: ros2/rclpy issue 1452, fixed in rolling by
pull 1547; the Jazzy wheels (rclpy 7.1.6) do not have it.

``MultiThreadedExecutor`` here submits each task once; when the wait yields a task that is
still queued (the start of that loop), it blocks until a worker has started it instead of
submitting it again; from then on the task is ``executing`` and is not yielded again. Fresh work
is still handed over without waiting, so throughput under load is upstream's. The block is
bounded by the pool being busy, as the upstream executor already is (a task that cannot get a
worker cannot run either way).

``run_node`` is the Jazzy ``main()`` shape (init; spin; Ctrl-C / external shutdown are a clean
stop; finally, with SIGINT/SIGTERM deferred, ``close()`` if the node has one, destroy,
``try_shutdown``) written once. A node
that fails on its own thread sets ``exit_code`` and shuts its context down; the process then
exits with that code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
import signal
import sys
import threading
from typing import Any

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    ShutdownException,
    SingleThreadedExecutor,
    TimeoutException,
)
from rclpy.executors import MultiThreadedExecutor as _RclpyMultiThreadedExecutor

from selfalign_core.polled import SharedSimClock

__all__ = ['MultiThreadedExecutor', 'SingleThreadedExecutor', 'run_node', 'signals_deferred',
           'spin_quietly']

_START_POLL_S = 0.1  # how often a wait for a free worker re-checks for shutdown


class MultiThreadedExecutor(_RclpyMultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor without the busy loop (see the module docstring)."""

    def __init__(self, num_threads: int | None = None, *, context: Any = None) -> None:
        super().__init__(num_threads, context=context)
        self._queued: dict[Any, threading.Event] = {}  # submitted, no worker has started it
        self._queued_lock = threading.Lock()

    def _spin_once_impl(self, timeout_sec: Any = None,
                        wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(
                timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            return
        with self._queued_lock:
            started = self._queued.get(handler)
            if started is None:
                started = self._queued[handler] = threading.Event()
                fresh = True
            else:
                fresh = False
        if not fresh:
            # Yielded again while still queued: upstream would submit it again and loop.
            # Block until a worker takes it; from then on it is 'executing' and not yielded.
            while not started.wait(_START_POLL_S):
                if self._is_shutdown or not self._context.ok():
                    return
            return

        def run() -> None:
            with self._queued_lock:
                self._queued.pop(handler, None)
            started.set()
            handler()

        try:
            self._executor.submit(run)
        except RuntimeError:  # the pool was shut down under us (executor.shutdown)
            return
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exception of a callback


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside (main thread only): a second Ctrl-C, or the SIGTERM a
    launcher escalates to, must not cut a checkpoint or a recording off half-written. SIGKILL
    still ends the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def spin_quietly(executor: Any) -> None:
    """``executor.spin()`` where Ctrl-C and an external shutdown are a normal end."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def run_node(node_factory: Callable[[], Any], num_threads: int = 1,
             args: list[str] | None = None,
             spin: Callable[[Any, Any], None] | None = None) -> None:
    """Init rclpy, build the node, spin it until Ctrl-C or shutdown, then close it cleanly.

    Args:
        node_factory: builds the node (after ``rclpy.init``). A ``ValueError`` or
            ``ParameterException`` from it (a bad parameter) is printed without a traceback
            and exits with status 2.
        num_threads: 1 = ``SingleThreadedExecutor`` (every callback is short; slow work is
            on the node's own threads); more = this module's ``MultiThreadedExecutor``.
        args: ROS arguments (``main(args)``); None = ``sys.argv``.
        spin: ``spin(node, executor)`` instead of ``executor.spin()`` (a node with a hot path
            of its own, e.g. the bridge's lockstep wait set).
    """
    rclpy.init(args=args)
    node = sim_clock = None
    try:
        try:
            node = node_factory()
        except (ValueError, ParameterException) as exc:
            print(f'{getattr(node_factory, "__name__", "node")}: bad parameter: {exc}',
                  file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        executor = (SingleThreadedExecutor() if num_threads <= 1
                    else MultiThreadedExecutor(num_threads=num_threads))
        executor.add_node(node)
        # sim time from a /clock subscription taken on its own thread: the simulator publishes
        # /clock every step, and as a callback each one woke the executor (selfalign_core.polled)
        # (at most 1/SIM_CLOCK_MIN_PERIOD_S updates a second for nodes whose clock only stamps
        # logs and reports: one wake-up per sim step less for their process)
        sim_clock = SharedSimClock(node, [node], min_period_s=float(
            getattr(node, 'SIM_CLOCK_MIN_PERIOD_S', 0.0)))
        if spin is None:
            spin_quietly(executor)
        else:
            spin(node, executor)
    except (KeyboardInterrupt, ExternalShutdownException):  # construction, or a custom spin
        pass
    finally:
        with signals_deferred():
            if sim_clock is not None:
                sim_clock.close()
            if node is not None:
                close = getattr(node, 'close', None)
                if close is not None:
                    close()
                node.destroy_node()
            rclpy.try_shutdown()
    code = int(getattr(node, 'exit_code', 0) or 0)
    if code:  # the node failed and said why (it shut its context down itself)
        raise SystemExit(code)
