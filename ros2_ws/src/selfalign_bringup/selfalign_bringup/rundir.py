"""Run directories: `runs/<time>-<task>/` with config, transcript, metrics, plots, checkpoints.

Layout (DESIGN.md "Runs")::

    runs/20261121-193000-push/
      config.yaml          resolved configuration (every node's parameters), written once
      transcript.jsonl     every LLM prompt and reply (selfalign_llm), never the API key
      metrics.csv          one row per event: kind = episode | eval | alignment
      plots/*.png          success vs env steps, theta over time, rank agreement
      checkpoint.pt        the policy's atomic checkpoint (selfalign_policy.trainer)
      recording.mcap       robot-contract and selfalign topics

Pure Python (csv, yaml, matplotlib with the Agg backend); no rclpy.
"""

from __future__ import annotations

import csv
from datetime import datetime
import math
import os
from pathlib import Path
import threading
import time
from typing import Any

import yaml


class RunDir:
    """One training run's directory; thread-safe metric logging."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        (self.path / 'plots').mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fields: list[str] = []
        if self.metrics_path.exists():
            with open(self.metrics_path, newline='') as fh:
                self._fields = next(csv.reader(fh), [])

    @classmethod
    def create(cls, root: str | os.PathLike, task: str) -> RunDir:
        """A new `root/<YYYYmmdd-HHMMSS>-<task>` directory (suffixed if it exists)."""
        stem = f'{datetime.now():%Y%m%d-%H%M%S}-{task}'
        path = Path(root) / stem
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f'{stem}-{n}'
        path.mkdir(parents=True)
        return cls(path)

    @classmethod
    def open_existing(cls, path: str | os.PathLike) -> RunDir:
        """An existing run directory (for --resume); a clear error if it is not one."""
        path = Path(path)
        if not (path / 'config.yaml').is_file():
            raise FileNotFoundError(
                f'{path} is not a selfalign run directory (no config.yaml); pass the folder '
                'that `selfalign train` printed, e.g. runs/20261121-193000-push')
        return cls(path)

    config_path = property(lambda self: self.path / 'config.yaml')
    transcript_path = property(lambda self: self.path / 'transcript.jsonl')
    metrics_path = property(lambda self: self.path / 'metrics.csv')
    checkpoint_path = property(lambda self: self.path / 'checkpoint.pt')
    plots_dir = property(lambda self: self.path / 'plots')
    recording_path = property(lambda self: self.path / 'recording.mcap')

    def new_recording_path(self) -> Path:
        """Where this session records: ``recording.mcap``, or after a resume the next free
        ``recording-<k>.mcap`` (k = 1, 2, ...), so no earlier part is overwritten."""
        path, k = self.recording_path, 0
        while path.exists():
            k += 1
            path = self.path / f'recording-{k}.mcap'
        return path

    def write_config(self, config: dict[str, Any]) -> None:
        """Write the resolved configuration atomically."""
        tmp = self.config_path.with_suffix('.yaml.tmp')
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.config_path)

    def read_config(self) -> dict[str, Any]:
        """The saved configuration; every path inside the run directory it was written for is
        re-rooted here, so a copied or moved run directory writes to itself (its transcript,
        checkpoint, recording), never to the original's."""
        config = yaml.safe_load(self.config_path.read_text())
        old = str((config.get('/**') or {}).get('run_dir') or '')
        if old and Path(old).resolve() != self.path.resolve():
            new = str(self.path)
            for params in config.values():
                for key, value in (params or {}).items():
                    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
                        params[key] = new + value[len(old):]
        return config

    def log(self, kind: str, env_step: int, **values: Any) -> None:
        """Append a metrics row; new column names extend the header (the file is rewritten)."""
        row = {'time': f'{time.time():.3f}', 'kind': kind, 'env_step': int(env_step), **values}
        with self._lock:
            new = [k for k in row if k not in self._fields]
            if new:
                rows = self.read_metrics() if self.metrics_path.exists() else []
                self._fields = self._fields + new
                self._rewrite(rows)
            with open(self.metrics_path, 'a', newline='') as fh:
                csv.DictWriter(fh, fieldnames=self._fields).writerow(row)

    def rewind(self, env_step: int, kinds: tuple[str, ...] = ('episode', 'eval')) -> int:
        """Drop ``kinds`` rows logged after ``env_step`` (a run resumed from an earlier
        checkpoint replays those steps; their first version would otherwise stay beside the
        replayed one). Rewrites metrics.csv atomically; returns the number of rows dropped."""
        with self._lock:
            rows = self.read_metrics()
            keep = [r for r in rows
                    if not (r.get('kind') in kinds and int(r.get('env_step') or 0) > env_step)]
            if len(keep) == len(rows):
                return 0
            self._rewrite(keep)
            return len(rows) - len(keep)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """metrics.csv := header + rows, atomically (call with the lock held)."""
        tmp = self.metrics_path.with_suffix('.csv.tmp')
        with open(tmp, 'w', newline='') as fh:
            w = csv.DictWriter(fh, fieldnames=self._fields)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.metrics_path)

    def read_metrics(self) -> list[dict[str, str]]:
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path, newline='') as fh:
            return list(csv.DictReader(fh))

    def last_env_step(self) -> int:
        """Largest env_step logged so far (0 for a fresh run)."""
        steps = [int(r['env_step']) for r in self.read_metrics() if r.get('env_step')]
        return max(steps, default=0)


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, '') else math.nan
    except ValueError:
        return math.nan


def plot_run(run: RunDir, window: int = 20) -> list[Path]:
    """Write learning-curve PNGs from metrics.csv; returns the files written."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = run.read_metrics()
    written = []

    def save(fig, name):
        path = run.plots_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    episodes = [r for r in rows if r['kind'] == 'episode']
    evals = [r for r in rows if r['kind'] == 'eval']
    if episodes or evals:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if episodes:
            xs = [int(r['env_step']) for r in episodes]
            ok = [_num(r.get('success')) for r in episodes]
            smooth = [sum(ok[max(0, i - window + 1):i + 1]) / len(ok[max(0, i - window + 1):i + 1])
                      for i in range(len(ok))]
            ax.plot(xs, smooth, label=f'training episodes (mean of {window})')
        if evals:  # one row per evaluation episode or round: average rows of one env_step
            groups: dict[int, list[float]] = {}
            for r in evals:
                groups.setdefault(int(r['env_step']), []).append(_num(r.get('success_rate')))
            xs = sorted(groups)
            ax.plot(xs, [sum(groups[x]) / len(groups[x]) for x in xs], 'o-', label='evaluation')
        ax.set(xlabel='environment steps', ylabel='success rate', ylim=(-0.05, 1.05),
               title=f'{run.path.name}: task success')
        ax.grid(alpha=0.3)
        ax.legend(loc='best')
        save(fig, 'success.png')

    updates = [r for r in rows if r['kind'] == 'alignment']
    theta_cols = sorted({k for r in updates for k in r if k.startswith('theta.') and r[k]})
    if updates and theta_cols:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = [int(r['env_step']) for r in updates]
        for col in theta_cols:
            ax.plot(xs, [_num(r.get(col)) for r in updates], 'o-', label=col[len('theta.'):])
        ax.set(xlabel='environment steps', ylabel='value', yscale='symlog',
               title='reward parameters theta after each alignment update')
        ax.grid(alpha=0.3)
        ax.legend(loc='best', fontsize='small')
        save(fig, 'theta.png')
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(xs, [_num(r.get('kendall_tau_before')) for r in updates], 'o-', label='before')
        ax.plot(xs, [_num(r.get('kendall_tau_after')) for r in updates], 's-', label='after')
        ax.set(xlabel='environment steps', ylabel='Kendall tau', ylim=(-1.05, 1.05),
               title='agreement of the reward ranking with the LLM ranking')
        ax.grid(alpha=0.3)
        ax.legend(loc='best')
        save(fig, 'agreement.png')
    return written
