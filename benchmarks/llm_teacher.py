"""Benchmark of the LLM layer: scripted-teacher agreement at each noise level, and call overhead.

Run after ``source scripts/env.sh``: ``python benchmarks/llm_teacher.py [--draws N]``. Prints two
markdown tables:

1. the scripted teacher's agreement with ground-truth progress (K = 8 episodes per ranking,
   progress drawn uniformly in [0, 5], tie margin 0.05) for Boltzmann beta x mistake rate eps:
   mean Kendall tau-b against progress, mean pairwise agreement (ties count half) and the share
   of tied pairs;
2. the wall time per role through the full LLMClient path (prompt, call, strict parse,
   transcript) for the scripted teacher and for the real openai client over HTTP to the local
   fake server (which answers instantly: this is our overhead, not an LLM's latency). propose
   includes the sandboxed validation of the template (a subprocess).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
import statistics
import sys
import tempfile
import time

import numpy as np

from selfalign_core import features as F
from selfalign_core.episode import EpisodeRecord
from selfalign_llm.backends.openai_backend import OpenAIBackend, OpenAIConfig
from selfalign_llm.backends.scripted import (
    noisy_ranking,
    proposal_reply,
    ScriptedTeacher,
    TeacherConfig,
)
from selfalign_llm.client import ClientConfig, LLMClient
from selfalign_llm.parse import ranks_from_groups
from selfalign_llm.transcript import Transcript
from selfalign_reward.template import load_reference_template

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from fake_openai_server import FakeOpenAIServer  # noqa: E402 - a test tool, not shipped

K = 8


def agreement(groups: list[list[int]], progress: np.ndarray) -> tuple[float, float, float]:
    """(Kendall tau, pairwise agreement with ties as 1/2, share of tied pairs)."""
    r = np.array(ranks_from_groups(groups, len(progress)))
    conc = disc = ties = 0
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            s = np.sign(progress[i] - progress[j]) * np.sign(r[j] - r[i])
            ties += r[i] == r[j]
            conc += s > 0
            disc += s < 0
    pairs = len(r) * (len(r) - 1) / 2
    tau = (conc - disc) / max(math.sqrt((pairs - ties) * pairs), 1e-9)
    return tau, (conc + 0.5 * ties) / pairs, ties / pairs


def teacher_table(draws: int) -> str:
    rng = np.random.default_rng(0)
    lines = ['| beta | eps | Kendall tau | pairwise agreement | tied pairs |',
             '|---|---|---|---|---|']
    for beta in (math.inf, 20.0, 5.0, 1.0):
        for eps in (0.0, 0.1, 0.2):
            stats = np.array([agreement(noisy_ranking(p, rng, beta, eps, 0.05), p)
                              for p in rng.uniform(0, 5, size=(draws, K))])
            tau, agree, tied = stats.mean(axis=0)
            lines.append(f'| {beta:g} | {eps:g} | {tau:.3f} | {agree:.3f} | {tied:.3f} |')
    return '\n'.join(lines)


def random_episode(rng: np.random.Generator, steps: int = 100) -> EpisodeRecord:
    """An episode of random-walk raw quantities (for timing only)."""
    walk = lambda: 0.5 + np.cumsum(rng.normal(0, 0.005, (steps, 3)), axis=0)  # noqa: E731
    raw = {'ee_pos': walk(), 'ee_quat': np.tile([1.0, 0, 0, 0], (steps, 1)),
           'ee_vel': rng.normal(0, 0.05, (steps, 3)), 'finger_width': np.full(steps, 0.08),
           'force_left': rng.exponential(0.05, steps), 'force_right': np.zeros(steps),
           'block_pos': walk(), 'block_quat': np.tile([0, 0, 0, 1.0], (steps, 1)),
           'block_vel': np.zeros((steps, 3)), 'block_start_pos': np.full((steps, 3), 0.5),
           'goal_pos': np.tile([0.6, 0.1, 0.5], (steps, 1)),
           'action': rng.uniform(-1, 1, (steps, 4))}
    return EpisodeRecord('touch', F.pack(F.compute_features(raw, 0.5)))


def timing_table(repeats: int) -> str:
    rng = np.random.default_rng(1)
    episodes = [random_episode(rng) for _ in range(K)]
    template = load_reference_template('touch')
    rank_reply = '{"ranking": [' + ', '.join(f'[{i}]' for i in range(K)) + ']}'
    fail_reply = '{"analysis": "x", "parameters": {"force_threshold": 0.2}}'
    replies = {'propose': proposal_reply('touch'), 'rank': rank_reply,
               'analyze_failure': fail_reply}
    lines = ['| backend | propose (+ sandbox) ms | rank K=8, T=100 ms | analyze_failure ms |',
             '|---|---|---|---|']
    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmp:
        backends = {
            'scripted teacher': ScriptedTeacher(TeacherConfig()),
            'openai client -> local HTTP': OpenAIBackend(OpenAIConfig(
                model='fake-model', base_url=server.base_url, timeout_s=10, max_retries=0)),
        }
        for name, backend in backends.items():
            client = LLMClient(backend, Transcript(f'{tmp}/{name[:4]}.jsonl'), ClientConfig())
            times: dict[str, list[float]] = {r: [] for r in replies}
            for _ in range(repeats):
                for role, fn in (
                        ('propose', lambda c=client: c.propose_reward('touch')),
                        ('rank', lambda c=client: c.rank('touch', episodes)),
                        ('analyze_failure', lambda c=client: c.analyze_failure(
                            'touch', template, template.initial_theta(), episodes, 0.0, 0.9))):
                    server.push({'reply': replies[role]})
                    t0 = time.perf_counter()
                    fn()
                    times[role].append(1e3 * (time.perf_counter() - t0))
            med = {r: statistics.median(v) for r, v in times.items()}
            lines.append(f"| {name} | {med['propose']:.1f} | {med['rank']:.1f} | "
                         f"{med['analyze_failure']:.1f} |")
    return '\n'.join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--draws', type=int, default=2000, help='rankings per noise setting')
    ap.add_argument('--repeats', type=int, default=5, help='calls per role and backend')
    args = ap.parse_args()
    print(f'## Scripted teacher vs ground truth (K={K}, {args.draws} rankings per row)\n')
    print(teacher_table(args.draws))
    print(f'\n## Time per role through LLMClient (median of {args.repeats})\n')
    print(timing_table(args.repeats))


if __name__ == '__main__':
    main()
