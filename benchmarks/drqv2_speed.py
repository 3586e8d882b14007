"""DrQ-v2 update speed: selfalign_policy's learner vs the reference run the reference way.

Same process, same run, same replay contents (random episodes), batch 256, sampling included.
Rounds are interleaved (ours, reference, ours, ...) and each contender's best round is kept, so
load from other processes on the shared CPU does not favour whoever ran in a quiet moment.
  * pixels: 84x84, frame stack 3, hidden 1024. Reference = float grid_sample aug, stacked frames
    stored 3x, DataLoader collation, torch's default thread count; ours = replay.sample() +
    uint8 crop aug + channels-last encoder, once per ``--pixel-threads`` value (default 1 and 2;
    AgentConfig.num_threads picks one, default 1).
  * state (OBS_DIM), hidden 1024 and 256. Reference as above; ours with 1 thread.
The reference at 1 thread is printed too, so the thread count's share of the ratio is visible.
Targets (issue 3): pixels >= 3x, state >= 1.5x the reference way.

    python benchmarks/drqv2_speed.py [--pixel-updates 2] [--state-updates 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drqv2_reference import make_reference_loader, random_episodes, ReferenceAgent  # noqa: E402

from selfalign_policy.agent import DrQV2Agent  # noqa: E402
from selfalign_policy.config import AgentConfig  # noqa: E402
from selfalign_policy.replay import ReplayBuffer  # noqa: E402
from selfalign_reward.features import FEATURE_DIM, OBS_DIM  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
EPISODES, LENGTH, A = 20, 100, 4


def ours_fn(obs_shape: tuple[int, ...], hidden: int):
    """An update closure of our learner (replay sampling included)."""
    torch.manual_seed(0)
    pixels = len(obs_shape) == 3
    frame = (3, *obs_shape[1:]) if pixels else obs_shape
    rb = ReplayBuffer(frame, A, capacity=EPISODES * (LENGTH + 1) + 10, nstep=3, discount=0.99,
                      batch_size=256, frame_stack=3, reward_fn=lambda x: x[:, 0])
    rng = np.random.default_rng(0)
    for _ in range(EPISODES):
        def obs():
            return (rng.integers(0, 256, frame, np.uint8) if pixels
                    else rng.standard_normal(frame).astype(np.float32))
        rb.add_first(obs())
        for t in range(LENGTH):
            rb.add(rng.uniform(-1, 1, A), rng.standard_normal(FEATURE_DIM), obs(), False,
                   t == LENGTH - 1)
    agent = DrQV2Agent(rb.obs_shape, A, AgentConfig(hidden_dim=hidden, num_threads=0))
    return lambda step: agent.update(rb.sample(), step)


def reference_fn(obs_shape: tuple[int, ...], hidden: int):
    """An update closure of the reference learner run the reference way."""
    torch.manual_seed(0)
    pixels = len(obs_shape) == 3
    loader = make_reference_loader(random_episodes(EPISODES, LENGTH, obs_shape, A,
                                                   stacked_frames=3))
    agent = ReferenceAgent(obs_shape, A, hidden_dim=hidden, pixels=pixels)
    return lambda step: agent.update(loader, step)


def compare(contenders: dict[str, tuple[object, int]], updates: int, rounds: int
            ) -> dict[str, float]:
    """Best-round updates/s of each (fn, threads), rounds interleaved so that load from other
    processes on the shared CPU hits every contender alike."""
    for fn, threads in contenders.values():  # warm-up (allocations, oneDNN kernel choice)
        torch.set_num_threads(threads)
        for i in range(2):
            fn(10_000 + i)
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for name, (fn, threads) in contenders.items():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            for i in range(updates):
                fn(20_000 + i)
            best[name] = max(best[name], updates / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--pixel-updates', type=int, default=2)
    ap.add_argument('--state-updates', type=int, default=10)
    ap.add_argument('--pixel-threads', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--state-threads', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--skip-pixels', action='store_true')
    ap.add_argument('--rounds', type=int, default=3, help='interleaved rounds; best counts')
    args = ap.parse_args()
    rows = []
    # State first: our state agent leaves glibc alone, so every state contender runs with the
    # default allocator. Pixels last: the reference is timed alone first (default allocator,
    # the reference way), then our agent sets its process-wide heap reuse and the reference is
    # timed again beside it ("ref + heap"), so the allocator's share of the ratio is visible.
    settings = [(f'state {OBS_DIM}-d, hidden {h}', (OBS_DIM,), h,
                 args.state_updates * (4 if h == 256 else 1), args.state_threads)
                for h in (1024, 256)]
    if not args.skip_pixels:
        settings.append(('pixels 84x84x9, hidden 1024', (9, 84, 84), 1024, args.pixel_updates,
                         args.pixel_threads))
    for label, shape, hidden, n, threads in settings:
        ref = reference_fn(shape, hidden)
        plain = compare({'ref': (ref, DEFAULT_THREADS), 'ref1': (ref, 1)}, n, args.rounds)
        ours = ours_fn(shape, hidden)
        contenders = {'ref': (ref, DEFAULT_THREADS)}
        contenders.update({f'ours{t}': (ours, t) for t in threads})
        best = compare(contenders, n, args.rounds)
        for t in threads:
            rows.append((f'{label} (ours {t} thr)', best[f'ours{t}'], plain['ref'],
                         plain['ref1'], best['ref']))
    print(f'\n### DrQ-v2 updates/s, batch 256, sampling included (torch {torch.__version__}, '
          f'default threads {DEFAULT_THREADS}, best of {args.rounds} interleaved rounds)\n')
    d = DEFAULT_THREADS
    print(f'| setting | ours upd/s | reference way ({d} thr) | ratio | reference way (1 thr) | '
          f'ratio | reference beside ours ({d} thr) | ratio |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for name, ours, ref, ref1, ref_b in rows:
        print(f'| {name} | {ours:.2f} | {ref:.2f} | {ours / ref:.2f}x | {ref1:.2f} | '
              f'{ours / ref1:.2f}x | {ref_b:.2f} | {ours / ref_b:.2f}x |')
    print('\n"reference beside ours" ran after our agent was built: for pixels it shares our '
          'process-wide glibc heap setting (agent.keep_freed_memory_in_heap).')

if __name__ == '__main__':
    main()
