"""Sim-to-real benchmark: policies trained in lockstep without vs with domain randomisation,
evaluated in lockstep and under real-time rehearsal with 0 / 50 / 100 ms command latency.

Phases (each can be run alone; checkpoints and results live in benchmarks/out/sim2real/):

* ``train``  — DrQ-v2 (state obs, oracle reward) on ``SelfAlign/<Task>-v0``, once on the nominal
  scene and once inside ``RandomizedEnv`` (config/domain_randomization.yaml ranges, enabled).
* ``eval``   — the deterministic policy (``safety.DeployedPolicy``) on the nominal scene:
  *lockstep* (command acts for the whole next period) and *virtual rehearsal*: the real-time
  timing in virtual time — a policy timer free-running against the driver's (phase U(0, 1)
  period per episode) plus the latency, as ``rehearsal.CommandDelay``; fast and seeded.
* ``ros``    — the real thing: ``pybullet_bridge`` in realtime mode with ``rehearsal_latency_s``
  and ``policy_node`` in deploy mode (timer-driven, latest observations, safety layer on), as
  processes over DDS, several configurations side by side on separate ROS domains.

    python benchmarks/sim2real.py train [--task touch] [--steps 20000]
    python benchmarks/sim2real.py eval [--episodes 50]
    python benchmarks/sim2real.py ros [--episodes 50]
    python benchmarks/sim2real.py table      # print every result measured so far
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import time

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / 'benchmarks' / 'out' / 'sim2real'
DR_YAML = ROOT / 'ros2_ws' / 'src' / 'selfalign_bringup' / 'config' / 'domain_randomization.yaml'
ENV_IDS = {'touch': 'SelfAlign/Touch-v0', 'push': 'SelfAlign/Push-v0'}
VARIANTS = ('nominal', 'randomized')
LATENCIES_MS = (0, 50, 100)
VIRTUAL_LATENCIES_MS = (0, 50, 100, 200, 400)
PERIOD_S = 0.1


def ckpt_path(task: str, variant: str) -> Path:
    return OUT / f'{task}_{variant}' / 'checkpoint.pt'


def _results_path() -> Path:
    return OUT / 'results.json'


def _load_results() -> dict:
    p = _results_path()
    return json.loads(p.read_text()) if p.exists() else {}


def _save_result(key: str, value: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    res = _load_results()
    res[key] = value
    tmp = _results_path().with_suffix('.tmp')
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True))
    os.replace(tmp, _results_path())


# ---------------------------------------------------------------------------------- train
def train(task: str, variant: str, steps: int, seed: int) -> None:
    import gymnasium as gym
    import torch

    import selfalign_bringup.sim  # noqa: F401  (registers the envs)
    from selfalign_bringup.sim.randomization import RandomizationConfig, RandomizedEnv
    from selfalign_core import features, tasks
    from selfalign_policy.config import DrQV2Config
    from selfalign_policy.trainer import Callbacks, Trainer

    torch.set_num_threads(1)
    env = gym.make(ENV_IDS[task]).unwrapped
    if variant == 'randomized':
        cfg = RandomizationConfig.from_yaml(DR_YAML, task)
        env = RandomizedEnv(env, RandomizationConfig(**{**cfg.__dict__, 'enabled': True}))
    run_dir = ckpt_path(task, variant).parent
    cfg = DrQV2Config.from_dict({
        'agent': {'hidden_dim': 256, 'lr': 1e-4, 'stddev_steps': 100_000},
        'replay': {'capacity': steps + 1000},
        'trainer': {'seed': seed, 'eval_every_steps': 2500, 'eval_episodes': 10,
                    'progress': False, 'run_dir': str(run_dir),
                    'checkpoint_every_steps': 2500, 'total_env_steps': steps}})

    def on_eval(res: dict) -> None:
        print(json.dumps({'task': task, 'variant': variant, **res}), flush=True)

    trainer = Trainer(env, cfg, lambda x: tasks.oracle_reward(task, features.unpack(x)),
                      task=task, callbacks=Callbacks(on_eval=on_eval))
    t0 = time.perf_counter()
    trainer.train()
    trainer.save(ckpt_path(task, variant))
    print(f'{task}/{variant}: {trainer.env_step} steps in {time.perf_counter() - t0:.0f} s',
          flush=True)
    env.close()


# ---------------------------------------------------------------------------------- eval (gym)
def evaluate_gym(task: str, variant: str, latency_ms: float | None, episodes: int,
                 seed: int = 0, randomized_scene: bool = False) -> dict:
    """Nominal scene (or the randomised one); latency None = lockstep, else virtual real-time
    rehearsal."""
    import gymnasium as gym
    import torch

    from selfalign_bringup.rehearsal import CommandDelay, rehearsal_delay_s
    import selfalign_bringup.sim  # noqa: F401
    from selfalign_policy.safety import DeployedPolicy

    torch.set_num_threads(1)
    policy = DeployedPolicy(ckpt_path(task, variant))
    env = gym.make(ENV_IDS[task]).unwrapped
    if randomized_scene:
        from selfalign_bringup.sim.randomization import RandomizationConfig, RandomizedEnv
        cfg = RandomizationConfig.from_yaml(DR_YAML, task)
        env = RandomizedEnv(env, RandomizationConfig(**{**cfg.__dict__, 'enabled': True}))
    rng = np.random.default_rng([seed, int(latency_ms or 0)])
    wins = []
    for j in range(episodes):
        obs, _ = env.reset(seed=2_000_000 + j)
        policy.reset()
        delay = (None if latency_ms is None else
                 CommandDelay(rehearsal_delay_s(latency_ms / 1e3, rng.uniform(), PERIOD_S,
                                                0.002), PERIOD_S, -1.0))
        done, info = False, {}
        while not done:
            a = policy.act(obs)
            if delay is not None:
                v, g = delay.push(a[:3], float(a[3]))
                a = np.concatenate([v, [g]]).astype(np.float32)
            obs, _, term, trunc, info = env.step(a)
            done = term or trunc
        wins.append(bool(info['is_success']))
    env.close()
    return {'success': float(np.mean(wins)), 'episodes': episodes}


# ---------------------------------------------------------------------------------- table
def table() -> None:
    res = _load_results()
    for task in ENV_IDS:
        rows = [v for v in VARIANTS if any(k.startswith(f'{task}/{v}/') for k in res)]
        if not rows:
            continue
        print(f'\n### {task}: success rate (episodes per cell in brackets)\n')
        cols = [('lockstep', 'lockstep'), ('lockstep, randomised scene', 'lockstep_dr')]
        cols += [(f'virtual {ms} ms', f'virtual{ms}') for ms in VIRTUAL_LATENCIES_MS]
        extra = sorted({int(k.split('/ros')[1].split('_')[0]) for k in res
                        if k.startswith(f'{task}/') and '/ros' in k} - set(LATENCIES_MS))
        cols += [(f'ROS realtime {ms} ms', f'ros{ms}') for ms in (*LATENCIES_MS, *extra)]
        cols += [(f'ROS realtime {ms} ms, randomised bridge', f'ros{ms}_dr')
                 for ms in (*LATENCIES_MS, *extra)
                 if any(k.endswith(f'/ros{ms}_dr') for k in res)]
        print('| policy | ' + ' | '.join(c[0] for c in cols) + ' | kept at 50 ms (ROS) |')
        print('|---|' + '---:|' * (len(cols) + 1))
        for v in rows:
            cells = []
            for _, key in cols:
                r = res.get(f'{task}/{v}/{key}')
                cells.append('–' if r is None else f'{100 * r["success"]:.0f} % ({r["episodes"]})')
            lock, r50 = res.get(f'{task}/{v}/lockstep'), res.get(f'{task}/{v}/ros50')
            kept = ('–' if not lock or not r50 or lock['success'] == 0
                    else f'{100 * r50["success"] / lock["success"]:.0f} %')
            print(f'| {v} | ' + ' | '.join(cells) + f' | {kept} |')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('phase', choices=('train', 'eval', 'ros', 'ros-one', 'table'))
    ap.add_argument('--latency', type=int, default=0, help='ros-one: latency, ms')
    ap.add_argument('--latencies', default=','.join(map(str, LATENCIES_MS)),
                    help='ros: comma-separated latencies, ms')
    ap.add_argument('--bridge-randomize', action='store_true',
                    help='ros: domain randomisation in the bridge (the "real arm" differs)')
    ap.add_argument('--task', default='touch', choices=sorted(ENV_IDS))
    ap.add_argument('--variant', default='both', choices=(*VARIANTS, 'both'))
    ap.add_argument('--steps', type=int, default=20_000)
    ap.add_argument('--episodes', type=int, default=50)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    variants = VARIANTS if args.variant == 'both' else (args.variant,)
    if args.phase == 'train':
        for v in variants:
            train(args.task, v, args.steps, args.seed)
    elif args.phase == 'eval':
        for v in variants:
            r = evaluate_gym(args.task, v, None, args.episodes)
            _save_result(f'{args.task}/{v}/lockstep', r)
            print(args.task, v, 'lockstep', r, flush=True)
            r = evaluate_gym(args.task, v, None, args.episodes, randomized_scene=True)
            _save_result(f'{args.task}/{v}/lockstep_dr', r)
            print(args.task, v, 'lockstep, randomised scene', r, flush=True)
            for ms in VIRTUAL_LATENCIES_MS:
                r = evaluate_gym(args.task, v, ms, args.episodes)
                _save_result(f'{args.task}/{v}/virtual{ms}', r)
                print(args.task, v, f'virtual {ms} ms', r, flush=True)
    elif args.phase == 'ros':
        ros_rehearsal(args.task, variants, args.episodes,
                      tuple(int(x) for x in args.latencies.split(',')), args.bridge_randomize)
    elif args.phase == 'ros-one':
        r = ros_one(args.task, variants[0], args.latency, args.episodes, args.bridge_randomize)
        suffix = '_dr' if args.bridge_randomize else ''
        _save_result(f'{args.task}/{variants[0]}/ros{args.latency}{suffix}', r)
        print(args.task, variants[0], f'ROS {args.latency} ms', r, flush=True)
        return
    table()


def ros_one(task: str, variant: str, latency_ms: int, episodes: int,
            randomize: bool = False) -> dict:
    """One configuration: bridge (realtime, rehearsal latency, optionally domain
    randomisation as the stand-in for the real arm's differences) + policy_node (deploy)."""
    sys.path.insert(0, str(ROOT))
    from std_msgs.msg import String

    from tests.rosproc import NodeProcess, TestNode

    seed = 2_000_000  # the same scenes as the gym evaluation
    bridge = NodeProcess('selfalign_bringup', 'pybullet_bridge', params={
        'task': task, 'mode': 'realtime', 'seed': seed, 'command_timeout_s': 0.5,
        'rehearsal_latency_s': latency_ms / 1e3, 'randomize': randomize})
    policy = NodeProcess('selfalign_policy', 'deploy_node', params={
        'task': task, 'checkpoint': str(ckpt_path(task, variant)),
        'seed': seed, 'deploy_episodes': episodes, 'control_rate_hz': 1.0 / PERIOD_S})
    wins: list[bool] = []
    t0 = time.monotonic()
    with TestNode(f'sim2real_{variant}_{latency_ms}') as probe:
        probe.record(String, '/selfalign/policy_stats', 1000)
        try:
            bridge.start()
            policy.start()

            def stats() -> list[dict]:
                return [json.loads(m.data) for m in probe.messages('/selfalign/policy_stats')]
            probe.wait_until(lambda: any(s.get('kind') == 'done' for s in stats()),
                             episodes * 15 + 90, f'{episodes} deploy episodes')
            eps = [s for s in stats() if s.get('kind') == 'deploy_episode']
            wins = [bool(s['success']) for s in eps]
            interventions = eps[-1]['interventions'] if eps else {}
        except TimeoutError:
            print(policy.output()[-3000:], bridge.output()[-2000:], file=sys.stderr)
            raise
        finally:
            policy.stop()
            bridge.stop()
    return {'success': float(np.mean(wins)), 'episodes': len(wins),
            'wall_s': round(time.monotonic() - t0), 'safety_interventions': interventions,
            'load_avg': os.getloadavg()[0]}


def ros_rehearsal(task: str, variants: tuple[str, ...], episodes: int,
                  latencies: tuple[int, ...] = LATENCIES_MS, randomize: bool = False) -> None:
    """Every (variant, latency) side by side, each on its own ROS domain."""
    import subprocess

    procs = []
    for k, (v, ms) in enumerate((v, ms) for v in variants for ms in latencies):
        env = os.environ.copy()
        env['ROS_DOMAIN_ID'] = str(170 + k)
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        cmd = [sys.executable, __file__, 'ros-one', '--task', task, '--variant', v,
               '--latency', str(ms), '--episodes', str(episodes)]
        if randomize:
            cmd.append('--bridge-randomize')
            env['ROS_DOMAIN_ID'] = str(190 + k)
        procs.append((v, ms, subprocess.Popen(cmd, env=env)))
    for v, ms, proc in procs:
        rc = proc.wait()
        print(f'{task}/{v} ROS {ms} ms: exit {rc}', flush=True)


if __name__ == '__main__':
    sys.exit(main())
