"""Several seeds in one process: K DrQ-v2 state learners, one after another vs one batched network.

The experiment runs (``paper_table.py``, ``learning_check.py``) train one seed per process, two
processes at once on a 2-core machine. Would stacking K seeds' networks into one batched
network (``torch.func.vmap`` over the update, so each ``mm`` becomes one ``bmm`` over the seeds)
multiply throughput? Measured here, update only, on the same pre-sampled batches:

  * **sequential**: K real ``DrQV2Agent``s, ``agent.update`` one after another;
  * **batched**: the same networks' parameters stacked (``torch.func.stack_module_state``), the
    critic and actor losses of DrQ-v2 (clipped double Q, n-step target given, target-policy
    smoothing, deterministic policy gradient through min Q) differentiated with
    ``vmap(grad(...))``, one fused Adam over the stacked tensors (Adam is elementwise, so it is
    K independent Adams) and one soft target update. Same FLOPs per seed as the sequential
    agents; a timing prototype, not the product's learner.

Seed-updates/s is K x updates/s. Rounds are interleaved and each side's best round counts.

    python benchmarks/batched_seeds.py [--k 1 2 4 8] [--hidden 256 1024] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
import time

import torch
from torch.func import functional_call, grad, stack_module_state, vmap
import torch.nn.functional as F

from selfalign_core.features import OBS_DIM
from selfalign_policy.agent import DrQV2Agent
from selfalign_policy.config import AgentConfig

A, BATCH, STD, CLIP = 4, 256, 0.2, 0.3
OUT = Path(__file__).resolve().parent / 'results' / 'batched_seeds.json'


def batches(k: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, OBS_DIM, generator=g), torch.rand(BATCH, A, generator=g) * 2 - 1,
             torch.randn(BATCH, 1, generator=g), torch.full((BATCH, 1), 0.99 ** 3),
             torch.randn(BATCH, OBS_DIM, generator=g)) for _ in range(k)]


class Batched:
    """K agents' actor, critic and target critic as stacked parameters; one vmapped update."""

    def __init__(self, agents: list[DrQV2Agent], lr: float, tau: float) -> None:
        self.actor_p, _ = stack_module_state([a.actor for a in agents])
        self.critic_p, _ = stack_module_state([a.critic for a in agents])
        self.target_p = {n: t.detach().clone() for n, t in self.critic_p.items()}
        self.actor_m = copy.deepcopy(agents[0].actor).to('meta')
        self.critic_m = copy.deepcopy(agents[0].critic).to('meta')
        self.k, self.tau = len(agents), tau
        self.actor_opt = torch.optim.Adam(list(self.actor_p.values()), lr=lr, fused=True)
        self.critic_opt = torch.optim.Adam(list(self.critic_p.values()), lr=lr, fused=True)

        def actor(p, obs):
            return functional_call(self.actor_m, p, (obs,))

        def critic(p, obs, act):
            return functional_call(self.critic_m, p, (obs, act))

        def critic_loss(cp, ap, tp, obs, action, reward, discount, next_obs, eps):
            next_action = (actor(ap, next_obs) + eps.clamp(-CLIP, CLIP)).clamp(-1 + 1e-6, 1 - 1e-6)
            tq1, tq2 = critic(tp, next_obs, next_action)
            target = (reward + discount * torch.min(tq1, tq2)).detach()
            q1, q2 = critic(cp, obs, action)
            return F.mse_loss(q1, target) + F.mse_loss(q2, target)

        def actor_loss(ap, cp, obs, eps):
            mu = actor(ap, obs)
            x = mu + eps.clamp(-CLIP, CLIP)
            act = x - x.detach() + x.clamp(-1 + 1e-6, 1 - 1e-6).detach()
            q1, q2 = critic(cp, obs, act)
            return -torch.min(q1, q2).mean()

        self.critic_loss = vmap(critic_loss)
        self.critic_grad = vmap(grad(critic_loss))
        self.actor_grad = vmap(grad(actor_loss))

    def update(self, stacked: tuple[torch.Tensor, ...]) -> None:
        obs, action, reward, discount, next_obs = stacked
        eps = torch.randn(self.k, BATCH, A) * STD
        g = self.critic_grad(self.critic_p, self.actor_p, self.target_p, obs, action, reward,
                             discount, next_obs, eps)
        for n, p in self.critic_p.items():
            p.grad = g[n]
        self.critic_opt.step()
        eps = torch.randn(self.k, BATCH, A) * STD
        g = self.actor_grad(self.actor_p, self.critic_p, obs, eps)
        for n, p in self.actor_p.items():
            p.grad = g[n]
        self.actor_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_p.values()), list(self.critic_p.values()),
                                 self.tau)


def check(agents: list[DrQV2Agent], batched: Batched, data: list[tuple[torch.Tensor, ...]]
          ) -> float:
    """Largest difference between the batched critic loss and each agent's own networks' loss
    on the same batch and noise (the networks were stacked from those agents)."""
    stacked = tuple(torch.stack(x) for x in zip(*data))
    eps = torch.randn(len(agents), BATCH, A) * STD
    got = batched.critic_loss(batched.critic_p, batched.actor_p, batched.target_p, *stacked, eps)
    worst = 0.0
    with torch.no_grad():
        for i, (agent, (obs, action, reward, discount, next_obs)) in enumerate(zip(agents, data)):
            nxt = (agent.actor(next_obs) + eps[i].clamp(-CLIP, CLIP)).clamp(-1 + 1e-6, 1 - 1e-6)
            target = reward + discount * torch.min(*agent.critic_target(next_obs, nxt))
            q1, q2 = agent.critic(obs, action)
            want = F.mse_loss(q1, target) + F.mse_loss(q2, target)
            worst = max(worst, abs(float(got[i]) - float(want)) / max(1.0, abs(float(want))))
    return worst


def measure(k: int, hidden: int, threads: int, rounds: int, seconds: float) -> dict:
    torch.set_num_threads(threads)
    cfgs = [AgentConfig(hidden_dim=hidden, lr=3e-4, num_threads=threads) for _ in range(k)]
    agents = []
    for i, cfg in enumerate(cfgs):
        torch.manual_seed(i)
        agents.append(DrQV2Agent((OBS_DIM,), A, cfg))
    data = batches(k)
    stacked = tuple(torch.stack(x) for x in zip(*data))
    batched = Batched(agents, 3e-4, cfgs[0].critic_target_tau)  # copies their parameters
    err = check(agents, batched, data)
    if err > 1e-5:
        raise SystemExit(f"batched critic loss differs from the agents' by {err:.2e}")

    def seq() -> None:
        for agent, b in zip(agents, data):
            agent.update(b, 100_000, with_metrics=False)

    def bat() -> None:
        batched.update(stacked)

    best = {'sequential': 0.0, 'batched': 0.0}
    for fn in (seq, bat):  # warm-up (vmap traces, allocator)
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in (('sequential', seq), ('batched', bat)):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                fn()
                n += 1
            best[name] = max(best[name], k * n / (time.perf_counter() - t0))
    return {'k': k, 'hidden': hidden, 'threads': threads,
            'sequential_seed_updates_s': round(best['sequential'], 1),
            'batched_seed_updates_s': round(best['batched'], 1),
            'batched_over_sequential': round(best['batched'] / best['sequential'], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--k', type=int, nargs='+', default=[1, 2, 4, 8])
    ap.add_argument('--hidden', type=int, nargs='+', default=[256, 1024])
    ap.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=float, default=2.0, help='per side per round')
    args = ap.parse_args()
    rows = []
    print('| hidden | threads | seeds K | sequential seed-updates/s | batched seed-updates/s '
          '| batched / sequential |')
    print('|---:|---:|---:|---:|---:|---:|')
    for hidden in args.hidden:
        for threads in args.threads:
            for k in args.k:
                r = measure(k, hidden, threads, args.rounds, args.seconds)
                rows.append(r)
                print(f'| {hidden} | {threads} | {k} | {r["sequential_seed_updates_s"]} | '
                      f'{r["batched_seed_updates_s"]} | {r["batched_over_sequential"]:.2f}× |',
                      flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1) + '\n')
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
