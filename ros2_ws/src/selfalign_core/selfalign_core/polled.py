"""Subscriptions no executor serves: the thread that needs the messages takes them itself.

Why: a ROS message handled by an rclpy executor costs a wake-up of the executor's Python loop,
which rebuilds its wait set over every entity of every node it spins, turns the callback into
a task and hands it to a worker; in the embedded run (all nodes in one process) each env step
published ~25 such deliveries (state to the policy, the monitor's markers and recording, the
commands to the bridge) and that machinery, not the callbacks, held the GIL for more of each
step than the simulator and the learner together (``docs/performance.md``).

A ``PolledSubscription`` is an rcl subscription made on a node's handle, so its topic resolves
and remaps exactly as ``node.create_subscription`` would, but it is not in the node's entity
lists, so no executor waits on it. Its messages wait in the middleware's history (bounded by
the QoS depth) until the owner calls ``take``/``take_all``; ``PollGroup.wait`` blocks on an rcl
wait set over a few of them (no Python per entity besides adding its handle). Use it for
high-rate topics one thread consumes (the lockstep state in the training thread, a recorder's
writer thread, a 10 Hz marker timer that wants the latest pose); keep callbacks for anything
that must react on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
import threading
import time
from typing import Any

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time_source import CLOCK_TOPIC, TimeSource
from rclpy.type_support import check_is_valid_msg_type
from rosgraph_msgs.msg import Clock

__all__ = ['PolledSubscription', 'PollGroup', 'SharedSimClock']

_DOWN_SLEEP_S = 0.05  # PollGroup.ready's wait once the context is shut down


class PolledSubscription:
    """One subscription of ``node`` that its owner polls (see the module docstring).

    Args:
        node: the node the subscription belongs to (name resolution, remapping, graph).
        msg_type: message class.
        topic: topic name, resolved like ``node.create_subscription``'s.
        qos: a QoSProfile or a history depth (keep last, reliable).
        raw: take serialized bytes instead of messages.
    """

    def __init__(self, node: Node, msg_type: Any, topic: str, qos: QoSProfile | int,
                 raw: bool = False) -> None:
        if isinstance(qos, int):
            qos = QoSProfile(depth=qos)
        check_is_valid_msg_type(msg_type)
        with node.handle:
            self.handle = _rclpy.Subscription(node.handle, msg_type, topic,
                                              qos.get_c_qos_profile())
        self.msg_type = msg_type
        self.raw = raw
        self.topic = self.handle.get_topic_name()

    def take(self) -> Any | None:
        """The oldest waiting message (bytes when ``raw``), or None."""
        taken = self.take_with_info()
        return None if taken is None else taken[0]

    def take_with_info(self) -> tuple[Any, dict[str, Any]] | None:
        """(message, info) of the oldest waiting message, or None; info has the middleware's
        ``source_timestamp`` and ``received_timestamp`` (ns, system clock)."""
        with self.handle:
            return self.handle.take_message(self.msg_type, self.raw)

    def take_all(self) -> list[Any]:
        """Every waiting message, oldest first."""
        out = []
        while (msg := self.take()) is not None:
            out.append(msg)
        return out

    def take_latest(self) -> Any | None:
        """The newest waiting message (older ones are dropped), or None."""
        latest = None
        while (msg := self.take()) is not None:
            latest = msg
        return latest

    def destroy(self) -> None:
        self.handle.destroy_when_not_in_use()


class PollGroup:
    """Block until one of some polled subscriptions has a message (an rcl wait set)."""

    def __init__(self, node: Node, subscriptions: Sequence[PolledSubscription]) -> None:
        self.subscriptions = list(subscriptions)
        self._context = node.context
        self._ws = _rclpy.WaitSet(len(self.subscriptions), 0, 0, 0, 0, 0,
                                  self._context.handle)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s``; True if a message is (probably) waiting. Returns at once
        when one already is; False after the timeout or when the context is shut down."""
        return bool(self.ready(timeout_s))

    def ready(self, timeout_s: float) -> list[PolledSubscription]:
        """The subscriptions with a message waiting, after waiting up to ``timeout_s`` for one
        (0: a poll); [] after the timeout or when the context is shut down (then after a short
        sleep, so that a caller looping on it until its own stop does not spin)."""
        if not self._context.ok():
            time.sleep(min(max(timeout_s, 0.0), _DOWN_SLEEP_S))
            return []
        try:
            self._ws.clear_entities()
            for sub in self.subscriptions:
                self._ws.add_subscription(sub.handle)
            self._ws.wait(max(int(timeout_s * 1e9), 0))
        except RuntimeError:  # the context was shut down while waiting
            time.sleep(min(max(timeout_s, 0.0), _DOWN_SLEEP_S))
            return []
        ready = set(self._ws.get_ready_entities('subscription'))
        return [sub for sub in self.subscriptions if sub.handle.pointer in ready]


class SharedSimClock:
    """Sim time for the nodes of one process from a single /clock subscription, taken on its
    own thread.

    Each rclpy node with ``use_sim_time`` subscribes to /clock itself; in the embedded run
    the bridge publishes /clock every step, so each node's subscription is one more wake-up of
    the shared executor per step (each a rebuild of its wait set over every node's entities):
    env steps/s 72 → 94 without them (docs/performance.md). Here the nodes' own time sources
    are detached (their subscriptions destroyed) and their clocks attached to one time source
    that this object's thread feeds from a polled /clock subscription on ``owner``.

    Clocks keep following sim time; a ``use_sim_time`` changed at run time is not followed
    (the embedded run sets it once, from its parameters file). Nodes without ``use_sim_time``
    are left alone. ``close()`` stops the thread and destroys the subscription. With
    ``subscribe=False`` there is neither: the caller hands each /clock message to ``feed``.

    ``min_period_s`` > 0: after each update the thread waits that long (wall time) before it
    takes the newest /clock again, so the clocks follow sim time at most 1/min_period_s times a
    second instead of once per sim step. For processes whose clock only stamps logs and
    reports (a node's ``SIM_CLOCK_MIN_PERIOD_S``, read by ``run_node``); never for one that
    stamps commands in lockstep (the policy).
    """

    def __init__(self, owner: Node, nodes: Sequence[Node], min_period_s: float = 0.0,
                 subscribe: bool = True) -> None:
        self.nodes = [n for n in nodes if n.get_parameter('use_sim_time').value]
        self.min_period_s = float(min_period_s)
        self._stop = threading.Event()
        self._sub: PolledSubscription | None = None
        if not self.nodes:  # nobody follows /clock: nothing to take
            return
        self._source = TimeSource()
        self._source.ros_time_is_active = True  # no node attached: subscribes to nothing
        for node in self.nodes:
            node._time_source.detach_node()  # rclpy has no public handle on it
            self._source.attach_clock(node.get_clock())
        if not subscribe:  # the publisher of /clock is in this process and calls feed()
            return
        self._sub = PolledSubscription(owner, Clock, CLOCK_TOPIC,
                                       QoSProfile(depth=1,
                                                  reliability=ReliabilityPolicy.BEST_EFFORT))
        self._group = PollGroup(owner, [self._sub])
        self._owner_context = owner.context
        self._thread = threading.Thread(target=self._run, name='sim_clock', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._group.wait(0.1) and not self._owner_context.ok():
                return
            msg = self._sub.take_latest()
            if msg is not None:
                self._source.clock_callback(msg)
                if self.min_period_s > 0:
                    self._stop.wait(self.min_period_s)

    def feed(self, msg: Clock) -> None:
        """Set every clock to ``msg`` (for ``subscribe=False``: the embedded run's linked
        bridge calls it as it publishes /clock, so no thread wakes per step for it)."""
        if self.nodes:
            self._source.clock_callback(msg)

    def close(self) -> None:
        if self._sub is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._sub.destroy()
        self._sub = None
