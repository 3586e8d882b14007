"""DrQ-v2 agent: smoke updates on pixels and state, shapes from the spec, acting."""

import dataclasses

import numpy as np
import pytest
import torch

from selfalign_policy.agent import DrQV2Agent, Encoder, resolve_device
from selfalign_policy.config import AgentConfig

SMALL = AgentConfig(batch_size=4, hidden_dim=32, feature_dim=16, num_expl_steps=10)


def _batch(obs_shape, dtype, b=4, a=4, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        obs = rng.integers(0, 256, (b, *obs_shape), dtype=np.uint8)
        nxt = rng.integers(0, 256, (b, *obs_shape), dtype=np.uint8)
    else:
        obs = rng.standard_normal((b, *obs_shape)).astype(np.float32)
        nxt = rng.standard_normal((b, *obs_shape)).astype(np.float32)
    return (obs, rng.uniform(-1, 1, (b, a)).astype(np.float32),
            rng.standard_normal((b, 1)).astype(np.float32),
            np.full((b, 1), 0.99, np.float32), nxt)


@pytest.mark.parametrize('obs_shape,dtype', [((9, 32, 32), np.uint8), ((29,), np.float32)])
def test_two_updates_change_every_network_and_return_finite_metrics(obs_shape, dtype):
    torch.manual_seed(0)
    agent = DrQV2Agent(obs_shape, 4, SMALL)
    before = {n: [p.detach().clone() for p in m.parameters()]
              for n, m in [('encoder', agent.encoder), ('actor', agent.actor),
                           ('critic', agent.critic), ('critic_target', agent.critic_target)]}
    for i in range(2):
        metrics = agent.update(_batch(obs_shape, dtype, seed=i), step=100)
    assert set(metrics) == set(DrQV2Agent.METRIC_NAMES)
    assert all(np.isfinite(v) for v in metrics.values())
    for name, params in before.items():
        now = dict(agent.encoder.named_parameters()) if name == 'encoder' else None
        module = {'encoder': agent.encoder, 'actor': agent.actor, 'critic': agent.critic,
                  'critic_target': agent.critic_target}[name]
        if not params:  # state agent: identity encoder
            assert len(obs_shape) == 1 and now == {}
            continue
        changed = [not torch.equal(p0, p1) for p0, p1 in zip(params, module.parameters())]
        assert all(changed), f'{name}: some parameters did not move'
    assert agent.update(_batch(obs_shape, dtype), step=100, with_metrics=False) == {}


def test_shapes_come_from_the_spec():
    assert Encoder((9, 84, 84)).repr_dim == 32 * 35 * 35  # the reference's hard-coded value
    assert Encoder((9, 32, 32)).repr_dim == 32 * 9 * 9
    assert Encoder((6, 64, 48)).repr_dim == 32 * 25 * 17
    agent = DrQV2Agent((6, 40, 40), 3, SMALL)
    assert agent.actor.trunk[0].in_features == agent.repr_dim == 32 * 13 * 13
    assert agent.actor.policy[-1].out_features == 3
    assert agent.critic.Q1[0].in_features == SMALL.feature_dim + 3
    state = DrQV2Agent((17,), 2, SMALL)
    assert state.repr_dim == 17 and state.encoder_opt is None
    with pytest.raises(ValueError, match='obs_shape'):
        DrQV2Agent((3, 4), 2, SMALL)


def test_twin_heads_are_independent_orthogonal_layers():
    agent = DrQV2Agent((8,), 4, AgentConfig(hidden_dim=32, feature_dim=16))
    c = agent.critic
    for head in (c.Q1, c.Q2):
        w1, w2, w3 = head[0].weight, head[2].weight, head[4].weight
        assert torch.allclose(w1.T @ w1, torch.eye(20), atol=1e-4)  # (32, 20) orthonormal cols
        assert torch.allclose(w2.T @ w2, torch.eye(32), atol=1e-4)
        assert float(torch.linalg.norm(w3)) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(c.Q1[2].weight, c.Q2[2].weight)
    q1, q2 = c(torch.randn(5, 8), torch.rand(5, 4))
    assert q1.shape == q2.shape == (5, 1)


def _reference_agent(obs_shape, hidden):
    """The reference learner (benchmarks/drqv2_reference.py, after facebookresearch/drqv2)."""
    from pathlib import Path
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[4] / 'benchmarks'))
    from drqv2_reference import ReferenceAgent
    return ReferenceAgent(obs_shape, 4, hidden_dim=hidden, feature_dim=50,
                          pixels=len(obs_shape) == 3)


@pytest.mark.parametrize('obs_shape,dtype', [((24,), np.float32), ((9, 84, 84), np.uint8)])
def test_one_update_is_the_reference_math(obs_shape, dtype):
    """Same weights, batch and seed: losses and every parameter after one step agree (1e-5)."""
    pixels = len(obs_shape) == 3
    ref = _reference_agent(obs_shape, hidden=64)
    cfg = AgentConfig(hidden_dim=64, feature_dim=50, aug_pad=0, channels_last=False,
                      num_threads=0)
    ours = DrQV2Agent(obs_shape, 4, cfg)
    for mine, theirs in [(ours.encoder, ref.encoder), (ours.actor, ref.actor),
                         (ours.critic, ref.critic), (ours.critic_target, ref.critic_target)]:
        mine.load_state_dict(theirs.state_dict())
    if pixels:
        ref.aug = torch.nn.Identity()  # aug is compared on its own in test_augment_config
    batch = _batch(obs_shape, dtype, b=32)
    step = 5000
    torch.manual_seed(7)
    m_ref = ref.update(iter([tuple(torch.as_tensor(x) for x in batch)]), step)
    torch.manual_seed(7)
    m_ours = ours.update(batch, step)
    for k in ('critic_loss', 'actor_loss', 'critic_target_q', 'critic_q1', 'critic_q2'):
        assert m_ours[k] == pytest.approx(m_ref[k], rel=1e-5, abs=1e-5), k
    for mine, theirs in [(ours.encoder, ref.encoder), (ours.actor, ref.actor),
                         (ours.critic, ref.critic), (ours.critic_target, ref.critic_target)]:
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            assert torch.allclose(p, q, atol=1e-5), name


def test_act_uniform_then_policy_and_deterministic_eval():
    torch.manual_seed(1)
    agent = DrQV2Agent((9, 32, 32), 4, SMALL)
    obs = np.random.default_rng(0).integers(0, 256, (9, 32, 32), dtype=np.uint8)
    a = agent.act(obs, step=0, eval_mode=False)
    assert a.shape == (4,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
    e1 = agent.act(obs, step=5, eval_mode=True)
    e2 = agent.act(obs, step=10**6, eval_mode=True)
    assert np.array_equal(e1, e2)  # eval = the mean, no noise
    late = np.stack([agent.act(obs, step=10**6, eval_mode=False) for _ in range(50)])
    assert np.allclose(late.mean(0), e1, atol=0.1)  # std 0.1 around the mean


def test_cuda_request_without_cuda_fails_clearly():
    if torch.cuda.is_available():
        assert resolve_device('cuda').type == 'cuda'
    else:
        with pytest.raises(RuntimeError, match="no CUDA device; use 'cpu' or 'auto'"):
            resolve_device('cuda')
        assert resolve_device('auto').type == 'cpu'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
@pytest.mark.parametrize('obs_shape,dtype', [((9, 84, 84), np.uint8), ((27,), np.float32)])
def test_cuda_agent_updates_acts_and_matches_the_cpu_math(obs_shape, dtype):
    """The CUDA path (device:=auto on a GPU machine): networks, optimiser state and the update
    live on the GPU; one update matches the CPU agent's from the same weights (GPU float
    arithmetic differs in the last bits: compared loosely)."""
    cfg = AgentConfig(batch_size=4, hidden_dim=32, feature_dim=16, num_expl_steps=0,
                      device='auto')
    torch.manual_seed(0)
    gpu = DrQV2Agent(obs_shape, 4, cfg)
    assert gpu.device.type == 'cuda'
    assert all(p.is_cuda for p in gpu.critic.parameters())
    torch.manual_seed(0)
    cpu = DrQV2Agent(obs_shape, 4, dataclasses.replace(cfg, device='cpu'))
    cpu.load_state_dict({k: v for k, v in gpu.state_dict().items()})
    batch = _batch(obs_shape, dtype)
    torch.manual_seed(1)
    m_gpu = gpu.update(batch, step=100)
    torch.manual_seed(1)
    m_cpu = cpu.update(batch, step=100)
    assert all(np.isfinite(v) for v in m_gpu.values())
    if dtype == np.float32:  # no random augmentation: the same arithmetic
        assert m_gpu['critic_loss'] == pytest.approx(m_cpu['critic_loss'], rel=1e-3)
    act = gpu.act(batch[0][0], step=10**6, eval_mode=True)
    assert act.shape == (4,) and np.all(np.abs(act) <= 1.0)


def _stack_critic(new: dict) -> dict:
    """Inverse of agent.unstack_critic: the layout checkpoints had before the two-head critic."""
    old = {k: v for k, v in new.items() if k.startswith('trunk.')}
    old['l1.weight'] = torch.cat([new['Q1.0.weight'], new['Q2.0.weight']])
    old['l1.bias'] = torch.cat([new['Q1.0.bias'], new['Q2.0.bias']])
    old['w2'] = torch.stack([new['Q1.2.weight'].T, new['Q2.2.weight'].T])
    old['b2'] = torch.stack([new['Q1.2.bias'], new['Q2.2.bias']])[:, None]
    old['w3'] = torch.stack([new['Q1.4.weight'].T, new['Q2.4.weight'].T])
    old['b3'] = torch.stack([new['Q1.4.bias'], new['Q2.4.bias']])[:, None]
    return old


def test_a_checkpoint_with_the_old_stacked_critic_loads_into_the_same_function():
    from selfalign_policy.agent import _STACKED_CRITIC
    torch.manual_seed(0)
    a = DrQV2Agent((24,), 4, SMALL)
    for i in range(3):
        a.update(_batch((24,), np.float32, seed=i), step=100)
    state = a.state_dict()
    names = [n for n, _ in a.critic.named_parameters()]
    old_opt = state['critic_opt']
    moments = {key: _stack_critic({n: old_opt['state'][i][key] for i, n in enumerate(names)})
               for key in ('exp_avg', 'exp_avg_sq')}
    state['critic_opt'] = {
        'state': {i: {'step': old_opt['state'][0]['step'],
                      **{key: moments[key][n] for key in moments}}
                  for i, n in enumerate(_STACKED_CRITIC)},
        'param_groups': [{**old_opt['param_groups'][0], 'params': list(range(10))}]}
    state['critic'] = _stack_critic(state['critic'])
    state['critic_target'] = _stack_critic(state['critic_target'])
    b = DrQV2Agent((24,), 4, SMALL)
    b.load_state_dict(state)
    x, act = torch.randn(6, 24), torch.rand(6, 4)
    for qa, qb in zip(a.critic(x, act), b.critic(x, act)):
        assert torch.equal(qa, qb)
    for qa, qb in zip(a.critic_target(x, act), b.critic_target(x, act)):
        assert torch.equal(qa, qb)
    # and training goes on identically (the Adam moments came across)
    torch.manual_seed(5)
    ma = a.update(_batch((24,), np.float32, seed=9), step=100)
    torch.manual_seed(5)
    mb = b.update(_batch((24,), np.float32, seed=9), step=100)
    assert ma == mb
