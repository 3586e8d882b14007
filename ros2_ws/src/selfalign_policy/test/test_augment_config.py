"""Augmentation equals the reference grid_sample form; config parsing names bad fields."""

import pytest
import torch

from selfalign_policy.augment import draw_shifts, random_shift_crop, random_shift_grid_sample
from selfalign_policy.config import AgentConfig, ConfigError, DrQV2Config


@pytest.mark.parametrize('size,pad', [(84, 4), (32, 4), (20, 2)])
def test_integer_crop_equals_reference_grid_sample_on_same_draws(size, pad):
    g = torch.Generator().manual_seed(size)
    x = torch.randint(0, 256, (16, 9, size, size), dtype=torch.uint8, generator=g)
    shifts = draw_shifts(16, pad, generator=g)
    ours = random_shift_crop(x, pad, shifts)
    ref = random_shift_grid_sample(x.float(), pad, shifts)
    assert ours.dtype == torch.uint8 and ours.shape == x.shape
    # grid_sample lands on pixel centres up to float32 rounding of the grid (~1e-5 px)
    assert torch.allclose(ours.float(), ref, atol=1e-2)
    assert torch.equal(ours, ref.round().to(torch.uint8))
    # the gather form (the CUDA default) gives the same images
    assert torch.equal(random_shift_crop(x, pad, shifts, per_image_copy=False), ours)


def test_crop_shifts_and_replicates_edges():
    x = torch.arange(36, dtype=torch.uint8).view(1, 1, 6, 6)
    # (sx, sy) = (0, 2 pad): output row i reads row i + pad, column j reads j - pad (clamped)
    out = random_shift_crop(x, 2, torch.tensor([[0, 4]]))
    assert out[0, 0, 0].tolist() == [12, 12, 12, 13, 14, 15]   # row 2, left edge replicated
    assert out[0, 0, -1].tolist() == [30, 30, 30, 31, 32, 33]  # row 5 replicated at the bottom
    assert torch.equal(random_shift_crop(x, 2, torch.tensor([[2, 2]])), x)  # centre = identity


def test_config_from_dict_and_errors():
    cfg = DrQV2Config.from_dict({'agent': {'hidden_dim': 256, 'lr': '3e-4'},
                                 'trainer': {'seed': 4}})
    assert cfg.agent.hidden_dim == 256 and cfg.agent.lr == pytest.approx(3e-4)
    assert cfg.trainer.seed == 4 and cfg.replay.frame_stack == 3
    with pytest.raises(ConfigError, match=r"hiden_dim.*did you mean 'hidden_dim'"):
        DrQV2Config.from_dict({'agent': {'hiden_dim': 3}})
    with pytest.raises(ConfigError, match=r'AgentConfig.nstep = 0 must be >= 1'):
        DrQV2Config.from_dict({'agent': {'nstep': 0}})
    with pytest.raises(ConfigError, match=r'agent.batch_size = 2.5 must be an integer'):
        DrQV2Config.from_dict({'agent': {'batch_size': 2.5}})
    with pytest.raises(ConfigError, match=r'device'):
        AgentConfig(device='tpu')
    a = AgentConfig(stddev_init=1.0, stddev_final=0.1, stddev_steps=1000)
    assert a.stddev(0) == 1.0 and a.stddev(500) == pytest.approx(0.55) and a.stddev(10**6) == 0.1
    assert DrQV2Config.from_dict(cfg.to_dict()) == cfg
