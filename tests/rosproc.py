"""Test helper: start ROS 2 node executables as real processes, stop them, wait for topics.

Shared by the cross-package tests, the conformance suite and the benchmarks.  Nothing is mocked:
processes are started from the colcon install (``ros2_ws/install/<pkg>/lib/<pkg>/<exe>``) with
``env=os.environ.copy()`` (the root conftest set ROS_DOMAIN_ID, so every test session has its own
graph), in their own process group, and always killed — use ``NodeProcess`` as a context manager
or a fixture with ``try/finally``.

    with NodeProcess('selfalign_bringup', 'pybullet_bridge', params={'mode': 'lockstep'}):
        with TestNode('probe') as probe:
            msg = probe.wait_for_message(JointState, '/joint_states', timeout_s=20)

Only ``TestNode`` imports rclpy (lazily), so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import os
from pathlib import Path
import re
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / 'ros2_ws' / 'install'


def executable(package: str, name: str) -> Path:
    """Path of an installed node executable; FileNotFoundError says how to build it."""
    path = INSTALL / package / 'lib' / package / name
    if not path.exists():
        raise FileNotFoundError(f'{path} not found: build the workspace with '
                                '`bash scripts/setup.sh` (colcon) first')
    return path


def ros_args(params: dict[str, Any] | None = None, remaps: dict[str, str] | None = None,
             namespace: str | None = None, node_name: str | None = None,
             log_level: str | None = None) -> list[str]:
    """Build a ``--ros-args`` argument list (params as -p name:=value, YAML-style values)."""
    args: list[str] = []
    for k, v in (params or {}).items():
        args += ['-p', f'{k}:={_yaml_value(v)}']
    for a, b in (remaps or {}).items():
        args += ['-r', f'{a}:={b}']
    if namespace:
        args += ['-r', f'__ns:={namespace}']
    if node_name:
        args += ['-r', f'__node:={node_name}']
    if log_level:
        args += ['--log-level', log_level]
    return ['--ros-args', *args] if args else []


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (list, tuple)):
        return '[' + ','.join(_yaml_value(x) for x in v) + ']'
    if isinstance(v, float):
        return repr(v)
    return str(v)


class NodeProcess:
    """A node executable run as a subprocess in its own process group; output to a temp file.

    ``stop()`` sends SIGINT (the node's clean shutdown path), then SIGKILL to the group after
    ``grace_s``.  ``output()`` returns what the process printed so far (for failure messages).
    """

    def __init__(self, package: str, name: str, params: dict[str, Any] | None = None,
                 remaps: dict[str, str] | None = None, namespace: str | None = None,
                 extra_args: Iterable[str] = (), env: dict[str, str] | None = None,
                 grace_s: float = 5.0) -> None:
        self.cmd = [str(executable(package, name)), *extra_args,
                    *ros_args(params, remaps, namespace)]
        self.env = os.environ.copy() if env is None else env
        self.grace_s = grace_s
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile(mode='w+b')

    def start(self) -> NodeProcess:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, 'process not started'
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors='replace')

    def log_time(self, pattern: str, timeout_s: float) -> float:
        """Wall time (s since the epoch) of the first ROS log line whose message matches
        ``pattern`` (a regex), read from the line's own stamp; TimeoutError names the pattern."""
        line = re.compile(r'\[(\d+\.\d+)\] \[[^\]]*\]: .*' + pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = line.search(self.output())
            if m:
                return float(m.group(1))
            time.sleep(0.05)
        raise TimeoutError(f'no log line matching {pattern!r} after {timeout_s} s:\n'
                           + self.output()[-2000:])

    def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        assert self.proc is not None, 'process not started'
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> int | None:
        """SIGINT, then SIGKILL the process group; returns the exit code (None if never run)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=self.grace_s)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


class TestNode:
    """An rclpy node spun on a background thread, for tests: subscribe, record, call, publish.

    Owns its own rclpy Context, so several can coexist with other rclpy users in one process.
    """

    __test__ = False  # not a pytest class

    def __init__(self, name: str = 'selfalign_test_probe') -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self._records: dict[str, list[Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown races end the loop
                if self._stop.is_set():
                    return
                raise

    # ------------------------------------------------------------------ recording
    def record(self, msg_type: type, topic: str, qos: Any = 10) -> list[Any]:
        """Subscribe and append every message to a list (returned; read it under ``lock``)."""
        with self._lock:
            buf = self._records.setdefault(topic, [])

        def cb(msg: Any) -> None:
            with self._lock:
                buf.append(msg)

        self.node.create_subscription(msg_type, topic, cb, qos)
        return buf

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def messages(self, topic: str) -> list[Any]:
        """Copy of what ``record`` collected on ``topic`` so far."""
        with self._lock:
            return list(self._records.get(topic, []))

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float,
                   what: str = 'condition') -> None:
        """Poll ``predicate`` until true; TimeoutError names ``what``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        raise TimeoutError(f'timed out after {timeout_s} s waiting for {what}')

    def wait_for_message(self, msg_type: type, topic: str, timeout_s: float = 20.0,
                         qos: Any = 10) -> Any:
        """Next message on ``topic`` (subscribes on first use); TimeoutError names the topic."""
        with self._lock:
            known = topic in self._records
        if not known:
            self.record(msg_type, topic, qos)
        n0 = len(self.messages(topic)) if known else 0
        self.wait_until(lambda: len(self.messages(topic)) > n0, timeout_s,
                        f'a message on {topic}')
        return self.messages(topic)[n0]

    def topic_types(self) -> dict[str, list[str]]:
        """Graph view: topic name -> list of type names."""
        return dict(self.node.get_topic_names_and_types())

    def wait_for_topics(self, topics: Iterable[str], timeout_s: float = 20.0) -> None:
        """Wait until every topic has at least one publisher in the graph."""
        topics = list(topics)

        def ready() -> bool:
            return all(self.node.count_publishers(t) > 0 for t in topics)

        self.wait_until(ready, timeout_s, f'publishers on {topics}')

    def call(self, srv_type: type, name: str, request: Any, timeout_s: float = 20.0) -> Any:
        """Call a service (waits for it); TimeoutError names the service."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise TimeoutError(f'service {name} not available after {timeout_s} s')
            future = client.call_async(request)
            self.wait_until(future.done, timeout_s, f'a reply from {name}')
            return future.result()
        finally:
            self.node.destroy_client(client)

    def publisher(self, msg_type: type, topic: str, qos: Any = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> TestNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
