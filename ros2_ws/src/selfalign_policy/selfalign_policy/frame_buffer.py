"""The newest camera frames by stamp, bounded in bytes (no rclpy; thread-safe).

Camera frames arrive on their own topic, at their own pace; an Episode message names the
driver-clock stamps its steps had (``start_stamp``, ``end_stamp``). ``FrameBuffer`` keeps the
newest frames so that a consumer (monitor_node's evaluation videos, policy_node's key frames for
a vision LLM) can take those stamped within an episode once the episode is over.
"""

from __future__ import annotations

import bisect
from collections import deque
import threading
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from selfalign_core import contract_msgs as cm


class FrameBuffer:
    """The newest frames (stamp ns, Image), at most ``max_bytes`` of pixel data."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._frames: deque[tuple[int, Image]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, msg: Image) -> None:
        size = len(msg.data)
        with self._lock:
            self._frames.append((cm.stamp_ns(msg.header.stamp), msg))
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                self._bytes -= len(self._frames.popleft()[1].data)

    def newest_ns(self) -> int:
        with self._lock:
            return self._frames[-1][0] if self._frames else -1

    def stamped_between(self, start_ns: int, end_ns: int,
                        include_start: bool = False) -> list[tuple[int, Image]]:
        """(stamp, message) of the frames stamped in (start_ns, end_ns] (or [start_ns, end_ns]),
        in stamp order, one per stamp."""
        with self._lock:
            picked = {s: m for s, m in self._frames
                      if (start_ns <= s if include_start else start_ns < s) and s <= end_ns}
        return sorted(picked.items())

    def between(self, start_ns: int, end_ns: int) -> list[np.ndarray]:
        """RGB arrays of the frames stamped in (start_ns, end_ns], in stamp order."""
        return [cm.image_array(m) for _, m in self.stamped_between(start_ns, end_ns)]


def pick_key_frames(stamped: list[tuple[int, Any]], state_stamps: list[int],
                    k: int) -> list[tuple[int, Any]]:
    """``k`` of the (stamp, frame) pairs, evenly spread over the episode, each as (step, frame):
    the step of the latest state stamped at or before the frame (``state_stamps[0]`` is the
    reset state, step 0), so a camera whose stamps are not the states' is placed right too."""
    frames = [(max(0, bisect.bisect_right(state_stamps, s) - 1), m) for s, m in stamped]
    if len(frames) > k:
        frames = [frames[round(i * (len(frames) - 1) / max(1, k - 1))] for i in range(k)]
    return frames
