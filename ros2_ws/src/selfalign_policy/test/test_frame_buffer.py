"""Camera frames by stamp: bounded buffer, episode windows, key-frame choice (plain pytest)."""

from sensor_msgs.msg import Image

from selfalign_core import contract_msgs as cm
from selfalign_policy.frame_buffer import FrameBuffer, pick_key_frames


def _frame(stamp_ns: int, size: int = 10) -> Image:
    msg = Image(height=1, width=size, encoding='rgb8', step=3 * size)
    msg.header.stamp = cm.ns_to_stamp(stamp_ns)
    msg.data = bytes(3 * size)
    return msg


def test_buffer_keeps_the_newest_frames_within_its_byte_budget():
    buf = FrameBuffer(max_bytes=3 * 10 * 5)
    for t in range(8):
        buf.put(_frame(100 * t))
    assert [s for s, _ in buf.stamped_between(-1, 10**9)] == [300, 400, 500, 600, 700]
    assert [s for s, _ in buf.stamped_between(400, 600)] == [500, 600]
    assert [s for s, _ in buf.stamped_between(400, 600, include_start=True)] == [400, 500, 600]
    assert buf.newest_ns() == 700


def test_key_frames_spread_over_the_episode_and_labelled_with_their_step():
    states = [1000 + 100 * t for t in range(11)]  # reset + 10 steps
    exact = [(s, f'f{s}') for s in states]
    assert pick_key_frames(exact, states, 3) == [(0, 'f1000'), (5, 'f1500'), (10, 'f2000')]
    # a real camera: its own clock, 30 ms after each state -> still the step it shows
    late = [(s + 30, f'g{s}') for s in states]
    assert pick_key_frames(late, states, 2) == [(0, 'g1000'), (10, 'g2000')]
    assert pick_key_frames(exact[:2], states, 4) == [(0, 'f1000'), (1, 'f1100')]  # fewer: all
