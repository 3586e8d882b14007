"""Replay: n-step windows within episodes, termination vs truncation, frame stacks, memory,
re-scoring with a new reward callable."""

import numpy as np
import pytest

from selfalign_core import features, tasks
from selfalign_core.features import FEATURE_DIM
from selfalign_policy.replay import ReplayBuffer

GAMMA = 0.5
N = 3


def _fill(rb: ReplayBuffer, episodes: list[tuple[int, int, bool]]) -> None:
    """Episodes (id, length, terminated); obs/frames encode (id, t); feature 0 = 1000 id + t."""
    for ep, length, term in episodes:
        rb.add_first(_obs(rb, ep, 0))
        for t in range(length):
            f = np.zeros(FEATURE_DIM, np.float32)
            f[0] = 1000 * ep + t + 1  # features of step t + 1
            last = t == length - 1
            rb.add(np.full(4, t / 100, np.float32), f, _obs(rb, ep, t + 1),
                   terminated=last and term, truncated=last and not term)


def _obs(rb: ReplayBuffer, ep: int, t: int) -> np.ndarray:
    if rb.pixels:
        return np.full(rb.frame_shape, 10 * (ep % 10) + t, np.uint8)
    return np.array([ep, t, 0.0], np.float32)


def _reward_col0(x: np.ndarray) -> np.ndarray:
    return x[:, 0].astype(np.float64)


def test_nstep_windows_stay_in_episode_and_terminal_vs_truncated_discount():
    rb = ReplayBuffer((3,), 4, capacity=64, nstep=N, discount=GAMMA, batch_size=256,
                      reward_fn=_reward_col0, seed=1)
    lengths = {0: (5, True), 1: (4, False), 2: (2, True), 3: (6, False)}
    _fill(rb, [(ep, n, term) for ep, (n, term) in lengths.items()])
    assert len(rb) == sum(n for n, _ in lengths.values())
    seen_terminal_end = seen_truncated_end = 0
    for _ in range(5):
        b = rb.sample()
        for o, a, r, d, no in zip(b.obs, b.action, b.reward[:, 0], b.discount[:, 0], b.next_obs):
            ep, t = int(o[0]), int(o[1])
            length, term = lengths[ep]
            k = min(N, length - t)
            assert (int(no[0]), int(no[1])) == (ep, t + k), 'window crossed an episode'
            assert a[0] == pytest.approx(t / 100)
            expect = sum(GAMMA ** i * (1000 * ep + t + i + 1) for i in range(k))
            assert r == pytest.approx(expect)
            reaches_end = t + k == length
            if reaches_end and term:
                assert d == 0.0
                seen_terminal_end += 1
            else:
                assert d == pytest.approx(GAMMA ** k)
                seen_truncated_end += reaches_end
    assert seen_terminal_end > 0 and seen_truncated_end > 0


def test_running_episode_needs_full_window_and_ring_overwrite_stays_consistent():
    rb = ReplayBuffer((3, 4, 4), 4, capacity=23, nstep=N, discount=GAMMA, batch_size=64,
                      frame_stack=3, reward_fn=_reward_col0, seed=2)
    _fill(rb, [(ep, 6, ep % 2 == 0) for ep in range(9)])  # 63 slots through a 23-slot ring
    # a running episode with 2 transitions only: no window of it may be sampled yet
    rb.add_first(_obs(rb, 9, 0))
    for t in range(2):
        f = np.zeros(FEATURE_DIM, np.float32)
        f[0] = 9000 + t + 1
        rb.add(np.zeros(4, np.float32), f, _obs(rb, 9, t + 1), False, False)
    for _ in range(20):
        b = rb.sample()
        assert b.obs.shape == (64, 9, 4, 4) and b.obs.dtype == np.uint8
        for o, r, no in zip(b.obs, b.reward[:, 0], b.next_obs):
            code = o[-3:, 0, 0][0]  # newest frame
            ep_mod, t = divmod(int(code), 10)
            assert ep_mod != 9
            # stack = frames t-2, t-1, t of the same episode, first frame repeated at the start
            stack = [int(o[3 * j, 0, 0]) for j in range(3)]
            assert stack == [10 * ep_mod + max(t - 2 + j, 0) for j in range(3)]
            k = min(N, 6 - t)
            assert int(no[-3, 0, 0]) == 10 * ep_mod + t + k
            assert r > 0


def test_rescoring_with_new_reward_changes_sampled_rewards_for_same_draws():
    rb = ReplayBuffer((3,), 4, capacity=200, nstep=N, discount=0.99, batch_size=32,
                      reward_fn=_reward_col0, seed=3)
    _fill(rb, [(ep, 20, False) for ep in range(5)])
    state = rb.rng.bit_generator.state
    b1 = rb.sample()
    obs1, r1 = b1.obs.copy(), b1.reward.copy()
    rb.set_reward_fn(lambda x: -2.0 * x[:, 0] + 1.0)
    rb.rng.bit_generator.state = state
    b2 = rb.sample()
    assert np.array_equal(b2.obs, obs1)  # same transitions...
    k = (b2.next_obs[:, 1] - b2.obs[:, 1]).astype(int)  # steps in each window
    disc = np.array([(0.99 ** np.arange(n)).sum() for n in k])[:, None]
    assert np.allclose(b2.reward, -2.0 * r1 + disc, rtol=1e-5)  # ...re-scored
    assert not np.allclose(b2.reward, r1)


def test_oracle_reward_callable_plugs_in():
    rb = ReplayBuffer((3,), 4, capacity=100, nstep=N, discount=0.99, batch_size=8,
                      reward_fn=lambda x: tasks.oracle_reward('touch', features.unpack(x)))
    _fill(rb, [(0, 10, False)])
    b = rb.sample()
    assert b.reward.shape == (8, 1) and np.all(np.isfinite(b.reward))


def test_memory_is_preallocated_and_accounted():
    cap, a, bsz, stack, shape = 1000, 4, 16, 3, (3, 84, 84)
    rb = ReplayBuffer(shape, a, capacity=cap, nstep=N, discount=0.99, batch_size=bsz,
                      frame_stack=stack, reward_fn=_reward_col0)
    frame = int(np.prod(shape))
    per_slot = frame + 4 * a + 4 * FEATURE_DIM + 3 + 8 + 8  # frame, action, features, flags, t, ep
    outputs = 2 * bsz * stack * frame + 4 * bsz * a
    assert rb.nbytes == cap * per_slot + outputs
    # frames are stored once, not stacked: the frame store is a third of a stacked store
    assert rb.state_dict()['frames'].nbytes == cap * frame
    before = rb.nbytes
    _fill(rb, [(ep, 50, False) for ep in range(30)])  # wraps the ring
    rb.sample()
    assert rb.nbytes == before
    assert 'MiB preallocated' in rb.memory_report()


def test_bad_use_gives_clear_errors():
    rb = ReplayBuffer((3,), 4, capacity=50, nstep=N, discount=0.99, batch_size=4)
    with pytest.raises(RuntimeError, match='add_first'):
        rb.add(np.zeros(4), np.zeros(FEATURE_DIM), np.zeros(3), False, False)
    _fill(rb, [(0, 10, False)])
    with pytest.raises(RuntimeError, match='set_reward_fn'):
        rb.sample()
    rb.set_reward_fn(lambda x: np.zeros(3))
    with pytest.raises(ValueError, match='reward_fn returned shape'):
        rb.sample()


def test_a_new_reward_keeps_the_old_rewards_scale_and_a_fixed_reward_is_never_scaled():
    """A θ move that multiplies the reward by 50 (w_push 2 -> 49-like) leaves the critic's
    targets where they were; a reward that never changes trains unscaled (dividing the oracle
    by its own std stalled touch and grasp_lift seed 2)."""
    rb = ReplayBuffer((3,), 4, capacity=3000, nstep=N, discount=0.99, batch_size=32,
                      reward_fn=_reward_col0, seed=3, keep_reward_scale=True)
    _fill(rb, [(ep, 100, False) for ep in range(12)])
    assert rb.reward_scale == 1.0  # the first reward: no scale, however much is stored
    state = rb.rng.bit_generator.state
    r1 = rb.sample().reward.copy()
    rb.set_reward_fn(lambda x: 50.0 * x[:, 0])
    assert rb.reward_scale == pytest.approx(1 / 50, rel=1e-6)
    rb.rng.bit_generator.state = state
    np.testing.assert_allclose(rb.sample().reward, r1, rtol=1e-5)
    rb.set_reward_fn(lambda x: 100.0 * x[:, 0] + 7.0)  # a shift does not change the spread
    assert rb.reward_scale == pytest.approx(1 / 100, rel=1e-6)
    plain = ReplayBuffer((3,), 4, capacity=3000, nstep=N, discount=0.99, batch_size=32,
                         reward_fn=_reward_col0, seed=3)
    _fill(plain, [(ep, 100, False) for ep in range(12)])
    plain.set_reward_fn(lambda x: 50.0 * x[:, 0])
    assert plain.reward_scale == 1.0
    # A resumed buffer keeps the scale.
    again = ReplayBuffer((3,), 4, capacity=3000, nstep=N, discount=0.99, batch_size=32,
                         reward_fn=_reward_col0, seed=3, keep_reward_scale=True)
    again.load_state_dict(rb.state_dict())
    assert again.reward_scale == rb.reward_scale
