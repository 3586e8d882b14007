"""Atomic checkpoints of a training run, with every RNG state, so a resume continues the same run.

A checkpoint is one ``torch.save`` file holding a plain dict (agent and optimiser state, replay
arrays, step counters, RNG states of numpy, torch (CPU and CUDA), python ``random``, plus what
the caller adds). It is written to ``<path>.tmp``, flushed and fsynced, then ``os.replace``d
over ``path``: a crash leaves either the old or the new checkpoint, never half of one. The
checkpoint it replaces is kept as ``<stem>.prev<suffix>`` (``previous_path``), so a file damaged
later (a full disk, a copy cut short) still has a good predecessor beside it.
Files are read with ``weights_only=False`` (they hold numpy arrays and RNG tuples): load only
checkpoints you wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
import random
from typing import Any

import numpy as np
import torch


def capture_rng_states() -> dict[str, Any]:
    """Global RNG states of python random, numpy, torch CPU and (if present) CUDA."""
    state = {'python': random.getstate(), 'numpy': np.random.get_state(),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['torch_cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_states``."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'torch_cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['torch_cuda'])


def seed_everything(seed: int) -> None:
    """Seed python random, numpy's global RNG and torch (CPU and CUDA), like drqv2's utils."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (cut off, corrupted, not ours)."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where ``save_checkpoint`` keeps the checkpoint it replaced: checkpoint.prev.pt."""
    path = Path(path)
    return path.with_name(f'{path.stem}.prev{path.suffix}')


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any],
                    keep_previous: bool = True) -> Path:
    """Write ``state`` (plus the global RNG states) to ``path`` atomically; returns the path.

    With ``keep_previous`` the file it replaces becomes ``previous_path(path)`` (a hard link,
    so ``path`` exists at every moment; a rename where links are not supported)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(state)
    payload['rng_states'] = capture_rng_states()
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.is_file():
        prev = previous_path(path)
        link = prev.with_name(prev.name + '.tmp')
        try:
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, prev)
        except OSError:
            os.replace(path, prev)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = 'cpu',
                    restore_rng: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; restores the global RNGs by default."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no checkpoint at {path}; pass the file written by '
                                'save_checkpoint (e.g. <run_dir>/checkpoint.pt)')
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, pickle errors
        prev = previous_path(path)
        hint = (f'the checkpoint before it is kept as {prev}: copy it over {path.name} to '
                'resume from there' if prev.is_file() and prev != path else
                'restore a good copy to resume')
        raise CheckpointError(
            f'checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it was cut off or '
            f'corrupted. It is left as it is: {hint}, or start a new run directory') from None
    if not isinstance(state, dict) or 'rng_states' not in state:
        raise CheckpointError(f'{path} is not a selfalign checkpoint (no rng_states); pass the '
                              'file written by save_checkpoint')
    if restore_rng:
        restore_rng_states(state['rng_states'])
    return state
