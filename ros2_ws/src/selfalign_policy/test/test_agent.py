"""DrQ-v2 agent: smoke updates on pixels and state, shapes from the spec, acting."""

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
    assert agent.critic.l1.in_features == SMALL.feature_dim + 3
    state = DrQV2Agent((17,), 2, SMALL)
    assert state.repr_dim == 17 and state.encoder_opt is None
    with pytest.raises(ValueError, match='obs_shape'):
        DrQV2Agent((3, 4), 2, SMALL)


def test_twin_heads_are_independent_orthogonal_layers():
    agent = DrQV2Agent((8,), 4, AgentConfig(hidden_dim=32, feature_dim=16))
    c = agent.critic
    for k in range(2):
        w1 = c.l1.weight[k * 32:(k + 1) * 32]  # (32, 20): columns orthonormal, like nn.Linear
        assert torch.allclose(w1.T @ w1, torch.eye(20), atol=1e-4)
        assert torch.allclose(c.w2[k].T @ c.w2[k], torch.eye(32), atol=1e-4)
        assert float(torch.linalg.norm(c.w3[k])) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(c.w2[0], c.w2[1])
    q = c(torch.randn(5, 8), torch.rand(5, 4))
    assert q.shape == (2, 5, 1)


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
