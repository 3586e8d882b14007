"""DrQ-v2 learner speed: selfalign_policy vs the reference learner, three rows per setting.

For each setting (state 24-d hidden 256 and 1024; pixels 9x84x84 hidden 1024) and thread count:
  * **update only**: the same pre-sampled batch of 256 for both learners (the math alone);
  * **sampling only**: our ``ReplayBuffer.sample`` vs the reference's replay run its way
    (stacked frames stored per step, one transition at a time in Python, ``DataLoader``);
  * **end to end**: sample + update, each learner with its own replay.
The reference is ``drqv2_reference.py`` (facebookresearch/drqv2's agent and replay, no hydra or
files); both learners run in the same process with the same allocator setting. Pixel settings
run in a fresh process per allocator setting (glibc default, and heap reuse =
``agent.keep_freed_memory_in_heap``, which ours turns on for pixels), so its effect is a row of
its own. Rounds are interleaved (ours, reference, ours, ...) and each side's best round counts.
Last, replay memory per 100k pixel transitions in both layouts.

    python benchmarks/drqv2_speed.py [--rounds 4] [--threads 1 2] [--skip-pixels]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drqv2_reference import make_reference_loader, random_episodes, ReferenceAgent  # noqa: E402

from selfalign_core.features import FEATURE_DIM, OBS_DIM  # noqa: E402
from selfalign_policy.agent import DrQV2Agent, keep_freed_memory_in_heap  # noqa: E402
from selfalign_policy.config import AgentConfig  # noqa: E402
from selfalign_policy.replay import ReplayBuffer  # noqa: E402

EPISODES, LENGTH, A, BATCH = 20, 100, 4, 256
SETTINGS = {'state-256': ((OBS_DIM,), 256, 40), 'state-1024': ((OBS_DIM,), 1024, 8),
            'pixels-1024': ((9, 84, 84), 1024, 2)}


def our_replay(obs_shape: tuple[int, ...]) -> ReplayBuffer:
    pixels = len(obs_shape) == 3
    frame = (3, *obs_shape[1:]) if pixels else obs_shape
    rb = ReplayBuffer(frame, A, capacity=EPISODES * (LENGTH + 1) + 10, nstep=3, discount=0.99,
                      batch_size=BATCH, frame_stack=3 if pixels else 1,
                      reward_fn=lambda x: x[:, 0])
    rng = np.random.default_rng(0)

    def obs() -> np.ndarray:
        return (rng.integers(0, 256, frame, np.uint8) if pixels
                else rng.standard_normal(frame).astype(np.float32))

    for _ in range(EPISODES):
        rb.add_first(obs())
        for t in range(LENGTH):
            rb.add(rng.uniform(-1, 1, A), rng.standard_normal(FEATURE_DIM), obs(), False,
                   t == LENGTH - 1)
    return rb


def contenders(key: str, heap: bool) -> dict[str, object]:
    """name -> closure(step) for ours and the reference, update / sample / end to end."""
    obs_shape, hidden, _ = SETTINGS[key]
    pixels = len(obs_shape) == 3
    torch.manual_seed(0)
    rb = our_replay(obs_shape)
    ours = DrQV2Agent(rb.obs_shape, A, AgentConfig(hidden_dim=hidden, num_threads=0,
                                                   cpu_heap_reuse=heap))
    loader = make_reference_loader(random_episodes(EPISODES, LENGTH, obs_shape, A,
                                                   stacked_frames=3 if pixels else 1))
    ref = ReferenceAgent(obs_shape, A, hidden_dim=hidden, pixels=pixels)
    batch = tuple(torch.as_tensor(x) for x in rb.sample())

    class Same:  # the reference's update reads next(replay_iter): hand it our batch
        def __next__(self) -> tuple:
            return batch

    same = Same()
    return {'update/ours': lambda s: ours.update(batch, s),
            'update/ref': lambda s: ref.update(same, s),
            'sample/ours': lambda s: rb.sample(),
            'sample/ref': lambda s: next(loader),
            'e2e/ours': lambda s: ours.update(rb.sample(), s),
            'e2e/ref': lambda s: ref.update(loader, s)}


def measure(key: str, threads: int, heap: bool, rounds: int) -> dict[str, float]:
    if heap:
        keep_freed_memory_in_heap()
    torch.set_num_threads(threads)
    n = SETTINGS[key][2]
    fns = contenders(key, heap)
    for f in fns.values():  # warm-up: allocations, oneDNN kernel choice
        f(10_000)
        f(10_001)
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, f in fns.items():
            reps = n * 20 if name.startswith('sample') else n
            t0 = time.perf_counter()
            for i in range(reps):
                f(20_000 + i)
            best[name] = max(best[name], reps / (time.perf_counter() - t0))
    return best


def replay_mb_per_100k() -> tuple[float, float]:
    """Pixel replay bytes per 100k transitions: ours (one frame per step) vs the reference's."""
    def nbytes(capacity: int) -> int:
        return ReplayBuffer((3, 84, 84), A, capacity=capacity, nstep=3, discount=0.99,
                            batch_size=BATCH, frame_stack=3, reward_fn=lambda x: x[:, 0]).nbytes

    ours = (nbytes(2000) - nbytes(1000)) / 1000  # per slot, without the fixed sample buffers
    ep = random_episodes(1, 100, (9, 84, 84), A, stacked_frames=3)[0]
    ref = sum(v.nbytes for v in ep.values()) / len(ep['observation'])
    return ours * 1e5 / 2**20, ref * 1e5 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=4, help='interleaved rounds; best counts')
    ap.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--skip-pixels', action='store_true')
    ap.add_argument('--one', nargs=3, metavar=('SETTING', 'THREADS', 'HEAP'),
                    help=argparse.SUPPRESS)  # child process: print one JSON result
    args = ap.parse_args()
    if args.one:
        key, threads, heap = args.one
        print(json.dumps(measure(key, int(threads), heap == 'on', args.rounds)))
        return
    runs = [(k, t, 'off') for k in ('state-256', 'state-1024') for t in args.threads]
    if not args.skip_pixels:
        runs += [('pixels-1024', t, h) for t in args.threads for h in ('off', 'on')]
    print(f'### DrQ-v2 learner, batch {BATCH}, ops/s (torch {torch.__version__}; best of '
          f'{args.rounds} interleaved rounds; each row in a fresh process)\n')
    print('| setting | threads | allocator | row | ours /s | reference /s | ours / ref |')
    print('|---|---:|---|---|---:|---:|---:|')
    for key, threads, heap in runs:
        out = subprocess.run([sys.executable, __file__, '--rounds', str(args.rounds), '--one',
                              key, str(threads), heap], check=True, capture_output=True,
                             text=True).stdout
        best = json.loads(out.strip().splitlines()[-1])
        alloc = 'heap reuse' if heap == 'on' else 'glibc default'
        for row, label in (('update', 'update only'), ('sample', 'sampling only'),
                           ('e2e', 'end to end')):
            o, r = best[f'{row}/ours'], best[f'{row}/ref']
            print(f'| {key} | {threads} | {alloc} | {label} | {o:.2f} | {r:.2f} | '
                  f'{o / r:.2f}x |', flush=True)
    ours_mb, ref_mb = replay_mb_per_100k()
    print(f'\nPixel replay per 100k transitions (84x84 RGB, stack 3): ours {ours_mb:.0f} MB '
          f'(one frame per step, stacks built at sample time), reference layout {ref_mb:.0f} MB '
          f'(stacked observation stored per step): {ref_mb / ours_mb:.1f}x less.')


if __name__ == '__main__':
    main()
