"""Real-time rehearsal: command latency, jitter and drops as a network and a driver show them.

Pure numpy (no rclpy, no simulator). Two users share one timing model so they agree:

* ``CommandTimeline`` — the bridge in real-time mode. Each command gets an *effective time* =
  arrival + latency + U(0, latency_jitter_s) (never before the previous command's, as on an
  ordered link), or is dropped with ``drop_prob``. Each control tick integrates the interval
  since the last tick: the applied velocity is the **time-weighted mean** of the commands in
  force over it, scaled by actual / nominal period (a late tick moves the arm further), and the
  gripper is the command in force at the end. A 50 ms latency therefore moves half of the next
  period with the old command, instead of being rounded to whole ticks.
* ``CommandDelay`` — the same model in virtual time (lockstep bridge, gym env, the benchmark's
  fast rehearsal): one command per period, a fixed delay ``d`` = n periods + fraction f; period
  k applies ``f * a[k-n-1] + (1 - f) * a[k-n]``. A policy timer free-running against the
  driver's adds a phase of U(0, 1) period to the delay (``rehearsal_delay_s``).

Before any command the arm holds: zero velocity, gripper ``initial_width_m`` (open).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import math

import numpy as np


@dataclass(frozen=True)
class RehearsalConfig:
    """Injected timing faults of the real-time rehearsal (bridge parameters ``rehearsal_*``)."""

    latency_s: float = 0.0
    """Fixed command latency (network + driver), s."""
    latency_jitter_s: float = 0.0
    """Extra latency drawn U(0, latency_jitter_s) per command, s."""
    period_jitter: float = 0.0
    """Control-period jitter: each tick period is nominal * (1 + U(-j, j)); j in [0, 0.5)."""
    drop_prob: float = 0.0
    """Probability that a command is lost."""
    seed: int = 0
    """Seed of the fault draws (repeatable rehearsals)."""

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ValueError(f'rehearsal {name}={getattr(self, name)!r}: {why}')

        for name, hi in (('latency_s', 5.0), ('latency_jitter_s', 5.0)):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= hi):
                fail(name, f'must be in [0, {hi}] s')
        if not (math.isfinite(self.period_jitter) and 0.0 <= self.period_jitter < 0.5):
            fail('period_jitter', 'must be in [0, 0.5) (a fraction of the control period)')
        if not (math.isfinite(self.drop_prob) and 0.0 <= self.drop_prob < 1.0):
            fail('drop_prob', 'must be in [0, 1)')

    @property
    def active(self) -> bool:
        """True when any fault is injected (else the bridge keeps its plain real-time path)."""
        return bool(self.latency_s or self.latency_jitter_s or self.period_jitter
                    or self.drop_prob)


class CommandTimeline:
    """Commands with effective times; integrates them over control ticks (see module doc).

    Args:
        cfg: the faults to inject.
        period_s: nominal control period, s.
        initial_width_m: gripper width in force before any command, m.
    """

    def __init__(self, cfg: RehearsalConfig, period_s: float,
                 initial_width_m: float = 0.08) -> None:
        self.cfg = cfg
        self.period_s = float(period_s)
        self._rng = np.random.default_rng(cfg.seed)
        # (effective time s, velocity (3,), width m); the first entry is the state in force.
        self._events: deque[tuple[float, np.ndarray, float]] = deque(
            [(-math.inf, np.zeros(3), float(initial_width_m))])
        self.last_effective_s: float | None = None
        self.received = 0
        self.dropped = 0

    def reset(self, initial_width_m: float = 0.08) -> None:
        """Forget pending commands (episode reset): the arm holds, gripper open."""
        self._events = deque([(-math.inf, np.zeros(3), float(initial_width_m))])
        self.last_effective_s = None

    def add(self, velocity_mps: np.ndarray, width_m: float, now_s: float) -> float | None:
        """A command arrived at ``now_s``; returns its effective time, or None if dropped."""
        self.received += 1
        if self.cfg.drop_prob and self._rng.random() < self.cfg.drop_prob:
            self.dropped += 1
            return None
        delay = self.cfg.latency_s
        if self.cfg.latency_jitter_s:
            delay += float(self._rng.uniform(0.0, self.cfg.latency_jitter_s))
        t = max(float(now_s) + delay, self._events[-1][0])  # an ordered link
        self._events.append((t, np.asarray(velocity_mps, dtype=np.float64).reshape(3).copy(),
                             float(width_m)))
        return t

    def next_period_s(self) -> float:
        """Wall period until the next tick: nominal * (1 + U(-j, j))."""
        j = self.cfg.period_jitter
        return self.period_s * (1.0 + float(self._rng.uniform(-j, j))) if j else self.period_s

    def integrate(self, t0_s: float, t1_s: float) -> tuple[np.ndarray, float, float | None]:
        """Velocity to apply for one nominal period covering wall interval [t0, t1].

        Returns (velocity (3,) m/s: time-weighted mean over [t0, t1] * (t1 - t0) / period,
        gripper width in force at t1, effective time of the newest command in force at t1 or
        None when none has taken effect yet). Commands that took effect before t0 except the
        last are forgotten.
        """
        t0, t1 = float(t0_s), float(t1_s)
        if not t1 > t0:
            raise ValueError(f'integrate needs t1 > t0, got [{t0}, {t1}]')
        ev = self._events
        while len(ev) >= 2 and ev[1][0] <= t0:
            ev.popleft()
        acc = np.zeros(3)
        width = ev[0][2]
        newest = None if ev[0][0] == -math.inf else ev[0][0]
        for k, (t, v, w) in enumerate(ev):
            if t >= t1:
                break
            start = max(t, t0)
            end = min(ev[k + 1][0], t1) if k + 1 < len(ev) else t1
            if end > start:
                acc += v * (end - start)
            width = w
            newest = None if t == -math.inf else t
        self.last_effective_s = newest
        return acc / self.period_s, width, newest


class CommandDelay:
    """Virtual-time delay of one command per period (see module doc).

    Args:
        delay_s: total delay, s (>= 0).
        period_s: control period, s.
        initial_width_m: gripper width before the first command, m.
    """

    def __init__(self, delay_s: float, period_s: float, initial_width_m: float = 0.08) -> None:
        if not (math.isfinite(delay_s) and delay_s >= 0.0):
            raise ValueError(f'delay_s={delay_s!r} must be a finite number >= 0 (seconds)')
        self.period_s = float(period_s)
        q = float(delay_s) / self.period_s
        self.n = int(math.floor(q + 1e-12))
        self.frac = max(q - self.n, 0.0)
        self._hist: deque[tuple[np.ndarray, float]] = deque(
            [(np.zeros(3), float(initial_width_m))] * (self.n + 2), maxlen=self.n + 2)

    def push(self, velocity: np.ndarray, width: float) -> tuple[np.ndarray, float]:
        """Command of this period -> (velocity applied this period, width in force at its end).

        ``velocity`` may be in m/s or in action units: the blend is linear.
        """
        self._hist.append((np.asarray(velocity, dtype=np.float64).reshape(-1).copy(),
                           float(width)))
        older, newer = self._hist[0], self._hist[1]  # a[k-n-1], a[k-n]
        v = self.frac * older[0] + (1.0 - self.frac) * newer[0]
        return v, newer[1]


def rehearsal_delay_s(latency_s: float, phase: float, period_s: float,
                      compute_s: float = 0.0) -> float:
    """Total command delay of a free-running policy timer at ``phase`` in [0, 1) of a period
    behind the driver's tick, plus latency and the policy's compute time, s."""
    return float(latency_s) + float(phase) * float(period_s) + float(compute_s)
