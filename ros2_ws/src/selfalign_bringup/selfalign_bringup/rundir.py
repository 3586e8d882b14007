"""Run directories: `runs/<time>-<task>/` with config, transcript, metrics, plots, checkpoints.

Layout (docs/design.md "Runs")::

    runs/20261121-193000-push/
      config.yaml          resolved configuration (every node's parameters), written once
      transcript.jsonl     every LLM prompt and reply (selfalign_llm), never the API key
      metrics.csv          one row per event: kind = episode | eval | alignment | reward_spec
      reward_params.yaml   the reward parameters' ranges, scales and initial values (theta plot)
      plots/*.png          success vs env steps, theta over time, rank agreement
      checkpoint.pt        the policy's atomic checkpoint (selfalign_policy.trainer)
      recording.mcap       robot-contract and selfalign topics

Pure Python (csv, yaml, matplotlib with the Agg backend); no rclpy.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import csv
from datetime import datetime
import math
import multiprocessing
import os
from pathlib import Path
import signal
import threading
import time
from typing import Any

import yaml


def round_start_step(end_env_step: int, num_steps: int, workers: int = 1) -> int:
    """The env step at which the round began that a worker's episode of ``num_steps`` steps
    ended in at ``end_env_step`` (the first of the round to report).

    The trainer steps its N workers once each per tick and counts every worker's step, so the
    first worker's episode of T steps begun at env step C ends at C + (T - 1) N + 1; with one
    arm that is C + T.
    """
    return int(end_env_step) - (int(num_steps) - 1) * max(int(workers), 1) - 1


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
    params_path = property(lambda self: self.path / 'reward_params.yaml')

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

    def write_params(self, params: list[dict[str, Any]]) -> bool:
        """Record reward parameters (dicts of name, lower, upper, scale, initial) in
        reward_params.yaml. A name already recorded keeps its entry (its initial value is the
        run's first); new names are appended. Returns True when the file changed."""
        with self._lock:
            table = self.read_params()
            new = [p for p in params if str(p['name']) not in table]
            if not new:
                return False
            entries = [{'name': n, **e} for n, e in table.items()]
            for p in new:
                entries.append({'name': str(p['name']),
                                'lower': _opt_float(p.get('lower')),
                                'upper': _opt_float(p.get('upper')),
                                'scale': str(p.get('scale') or 'linear'),
                                'initial': _opt_float(p.get('initial'))})
            tmp = self.params_path.with_suffix('.yaml.tmp')
            tmp.write_text(yaml.safe_dump({'params': entries}, sort_keys=False))
            os.replace(tmp, self.params_path)
            return True

    def read_params(self) -> dict[str, dict[str, Any]]:
        """name -> {lower, upper, scale, initial} from reward_params.yaml ({} when absent)."""
        if not self.params_path.exists():
            return {}
        data = yaml.safe_load(self.params_path.read_text()) or {}
        return {str(p['name']): {k: v for k, v in p.items() if k != 'name'}
                for p in data.get('params') or []}

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

    def worker_names(self) -> set[str]:
        """Names of the workers (arms) whose episodes are logged ('' rows of one arm excluded)."""
        return {r['worker'] for r in self.read_metrics() if r.get('worker')}

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


def _opt_float(value: Any) -> float | None:
    try:
        return None if value in (None, '') else float(value)
    except (TypeError, ValueError):
        return None


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, '') else math.nan
    except ValueError:
        return math.nan


def _update_style(row: dict[str, str]) -> tuple[bool, bool]:
    """(applied, failure analysis) of an 'alignment' row; 'kept'/'skipped' = θ not applied."""
    status = row.get('status') or ''
    applied = not status.startswith(('kept', 'skipped'))
    return applied, _num(row.get('failure_analysis')) == 1


def success_figure(rows: list[dict[str, str]], window: int = 20, title: str = ''):
    """Smoothed training success and evaluation success rates (with each point's episode
    count); None without episodes."""
    from matplotlib.figure import Figure

    episodes = [r for r in rows if r['kind'] == 'episode']
    evals = [r for r in rows if r['kind'] == 'eval']
    if not episodes and not evals:
        return None
    fig = Figure(figsize=(6.4, 3.8), layout='constrained')
    ax = fig.subplots()
    if episodes:
        xs = [int(r['env_step']) for r in episodes]
        ok = [_num(r.get('success')) for r in episodes]
        smooth = [sum(ok[max(0, i - window + 1):i + 1]) / len(ok[max(0, i - window + 1):i + 1])
                  for i in range(len(ok))]
        ax.plot(xs, smooth, color='C0', lw=1.2, label=f'training episodes (mean of {window})')
    if evals:  # one row per evaluation episode or per round: the rows of one env_step
        groups: dict[int, list[float]] = {}
        for r in evals:
            value = _num(r.get('success_rate'))
            value = _num(r.get('success')) if math.isnan(value) else value
            if not math.isnan(value):
                groups.setdefault(int(r['env_step']), []).append(value)
        xs = sorted(groups)
        means = [sum(groups[x]) / len(groups[x]) for x in xs]
        counts = [len(groups[x]) for x in xs]
        common = max(set(counts), key=counts.count) if counts else 0
        each = f'{common} episode{"s" if common != 1 else ""} each' if len(set(counts)) <= 1 \
            else f'{min(counts, default=0)}-{max(counts, default=0)} episodes'
        ax.plot(xs, means, 'o-', color='C1', ms=5, label=f'evaluation ({each})')
        for x, y, n in zip(xs, means, counts):
            if len(xs) <= 20 or n != common:  # many rounds: the legend says the count
                ax.annotate(f'n={n}', (x, y), textcoords='offset points', ha='center',
                            xytext=(0, -12 if y > 0.9 else 7), fontsize=7, color='C1',
                            bbox={'boxstyle': 'round,pad=0.1', 'fc': 'white', 'ec': 'none',
                                  'alpha': 0.8})
    ax.set(xlabel='environment steps', ylabel='success rate', ylim=(-0.05, 1.08),
           title=f'{title}: task success' if title else 'task success')
    ax.grid(alpha=0.3)
    ax.legend(loc='upper left', fontsize='small')
    return fig


def theta_figure(rows: list[dict[str, str]], params: dict[str, dict[str, Any]] | None = None):
    """One panel per reward parameter: θ in force over env steps from its initial value (step
    0), each alignment update marked, the allowed range shaded (from ``params``, see
    ``RunDir.read_params``); None without parameters."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        """Log-axis labels as plain numbers (0.6, 2, 20), not 6e-01 or 2 x 10^0."""

        def __call__(self, x, pos=None):
            return f'{x:g}' if super().__call__(x, pos) else ''

    params = params or {}
    updates = [r for r in rows if r['kind'] == 'alignment']
    specs = [r for r in rows if r['kind'] == 'reward_spec']
    seen = sorted({k[len('theta.'):] for r in updates + specs for k in r
                   if k.startswith('theta.') and r[k]})
    names = list(params) + [n for n in seen if n not in params]
    if not names or not (updates or specs):
        return None
    end = max((int(r['env_step']) for r in rows if r.get('env_step')), default=0)
    ncols = 1 if len(names) == 1 else 2 if len(names) <= 4 else 3
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(max(3.6 * ncols, 6.4), 2.4 * nrows + 0.9), layout='constrained')
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    for ax in axes[len(names):]:
        fig.delaxes(ax)
    shaded = False
    for ax, name in zip(axes, names):
        col = f'theta.{name}'
        spec = params.get(name, {})
        initial = _opt_float(spec.get('initial'))
        points = sorted(((int(r['env_step']), _num(r.get(col))) for r in specs + updates
                         if not math.isnan(_num(r.get(col)))), key=lambda p: p[0])
        if initial is None and points and points[0][0] == 0 and specs:
            initial = points[0][1]
        if initial is not None:
            points = [(0, initial)] + points
        lower, upper = _opt_float(spec.get('lower')), _opt_float(spec.get('upper'))
        values = [v for _, v in points]
        log = spec.get('scale') == 'log' and all(v > 0 for v in values) \
            and (lower is None or lower > 0)
        if log:
            ax.set_yscale('log')
            ax.yaxis.set_major_formatter(Plain())
            ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False))
        if lower is not None and upper is not None:
            ax.axhspan(lower, upper, color='C2', alpha=0.10, lw=0)
            for bound in (lower, upper):
                ax.axhline(bound, color='C2', lw=0.8, ls='--', alpha=0.7)
            lo, hi = min([lower] + values), max([upper] + values)
            if log:
                pad = (hi / lo) ** 0.06
                ax.set_ylim(lo / pad, hi * pad)
            else:
                pad = 0.06 * (hi - lo)
                ax.set_ylim(lo - pad, hi + pad)
            shaded = True
        for r in updates:
            applied, _ = _update_style(r)
            ax.axvline(int(r['env_step']), color='C0' if applied else '0.6', lw=0.6, ls=':')
        if points:
            xs = [x for x, _ in points] + [max(end, points[-1][0])]
            ax.step(xs, values + [values[-1]], where='post', color='C0', lw=1.4)
        if initial is not None:
            ax.plot([0], [initial], 's', color='k', ms=5, zorder=3)
        for r in updates:
            value = _num(r.get(col))
            if math.isnan(value):
                continue
            applied, failure = _update_style(r)
            ax.plot([int(r['env_step'])], [value], 'D' if failure else 'o', ms=6, zorder=4,
                    color='C0' if applied else '0.5', mfc='C0' if applied else 'white')
        final = values[-1] if values else math.nan
        since = f'  (initial {initial:.3g})' if initial is not None else ''
        ax.set_title(f'{name} = {final:.3g}{since}', fontsize=10)
        ax.grid(alpha=0.3, which='major')
        ax.tick_params(which='both', labelsize=8)
    for ax in axes[max(0, len(names) - ncols):len(names)]:
        ax.set_xlabel('environment steps', fontsize=9)
        ax.xaxis.set_tick_params(labelbottom=True)  # also above an empty grid cell
    handles = [Line2D([], [], color='C0', lw=1.4, label='θ in force')]
    if any(_opt_float(params.get(n, {}).get('initial')) is not None for n in names) or specs:
        handles.append(Line2D([], [], ls='', marker='s', color='k', ms=5, label='initial'))
    styles = {_update_style(r) for r in updates}
    for (applied, failure), label in (((True, False), 'update applied'),
                                      ((False, False), 'update kept (not applied)'),
                                      ((True, True), 'failure analysis, applied'),
                                      ((False, True), 'failure analysis, kept')):
        if (applied, failure) in styles:
            handles.append(Line2D([], [], ls='', marker='D' if failure else 'o', ms=6,
                                  color='C0' if applied else '0.5',
                                  mfc='C0' if applied else 'white', label=label))
    if shaded:
        handles.append(Patch(color='C2', alpha=0.25, label='allowed range'))
    fig.legend(handles=handles, loc='outside lower center', ncols=min(len(handles), 3),
               fontsize='small', frameon=False)
    fig.suptitle('reward parameters θ (title: final value)', fontsize=11)
    return fig


def agreement_figure(rows: list[dict[str, str]]):
    """Per alignment update, agreement before -> after (an arrow): Kendall τ with the LLM
    ranking and, when logged, held-out agreement; None without updates."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    updates = [r for r in rows if r['kind'] == 'alignment']
    if not updates:
        return None
    panels = [('kendall_tau', 'Kendall τ with the LLM ranking')]
    heldout = [_num(r.get(k)) for r in updates for k in ('heldout_before', 'heldout_after')]
    if any(not math.isnan(v) and v != 0 for v in heldout):  # all 0: no held-out pairs yet
        panels.append(('heldout', 'held-out agreement'))
    fig = Figure(figsize=(6.4, 2.5 * len(panels) + 0.9), layout='constrained')
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False).ravel()
    for ax, (key, label) in zip(axes, panels):
        ax.axhline(0, color='0.5', lw=0.8)
        for r in updates:
            x = int(r['env_step'])
            before, after = _num(r.get(f'{key}_before')), _num(r.get(f'{key}_after'))
            applied, failure = _update_style(r)
            color = 'C0' if applied else '0.5'
            if not math.isnan(before):
                ax.plot([x], [before], 'o', ms=6, mfc='white', mec='k', zorder=3)
            if not math.isnan(after):
                ax.plot([x], [after], 'D' if failure else 'o', ms=6, color=color, zorder=4)
            if not (math.isnan(before) or math.isnan(after)) and abs(after - before) > 0.02:
                ax.annotate('', xy=(x, after), xytext=(x, before), zorder=2,
                            arrowprops={'arrowstyle': '-|>', 'color': color, 'lw': 1.3,
                                        'shrinkA': 4, 'shrinkB': 4})
        ax.set(ylabel=label.split(' with')[0], ylim=(-1.08, 1.08), title=label)
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel('environment steps')
    handles = [Line2D([], [], ls='', marker='o', mfc='white', mec='k', label='before')]
    styles = {_update_style(r) for r in updates}
    for (applied, failure), text in (((True, False), 'after, applied'),
                                     ((False, False), 'after, kept (not applied)'),
                                     ((True, True), 'after, failure analysis'),
                                     ((False, True), 'after, failure analysis kept')):
        if (applied, failure) in styles:
            handles.append(Line2D([], [], ls='', marker='D' if failure else 'o',
                                  color='C0' if applied else '0.5', label=text))
    fig.legend(handles=handles, loc='outside lower center', ncols=min(len(handles), 4),
               fontsize='small', frameon=False)
    fig.suptitle('alignment updates: agreement before → after', fontsize=11)
    return fig


def plot_run(run: RunDir, window: int = 20) -> list[Path]:
    """Write success.png, theta.png and agreement.png from metrics.csv (and the parameter
    ranges in reward_params.yaml); returns the files written."""
    rows = run.read_metrics()
    written = []
    for name, fig in (('success.png', success_figure(rows, window, run.path.name)),
                      ('theta.png', theta_figure(rows, run.read_params())),
                      ('agreement.png', agreement_figure(rows))):
        if fig is not None:
            path = run.plots_dir / name
            fig.savefig(path, dpi=100)
            written.append(path)
    return written


def _plot_run_at(path: str, window: int) -> list[str]:
    """``plot_run`` in a worker process (picklable arguments and result)."""
    return [str(p) for p in plot_run(RunDir(path), window)]


def _ignore_sigint() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the worker must live on to draw
    # the final plots while the run shuts down
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Plotter:
    """Redraws a run's plots (``plot_run``) in a worker process of its own, started on first
    use: a redraw is ~1–2 s of matplotlib CPU, which in the caller's process would hold the GIL
    its other threads need (in the embedded run, the learner's; docs/performance.md). A worker
    that died is replaced at the next redraw; ``close`` stops it."""

    def __init__(self, run: RunDir, window: int = 20) -> None:
        self.run = run
        self.window = window
        self._pool: ProcessPoolExecutor | None = None

    def plot(self, timeout_s: float = 300.0) -> list[Path]:
        """Redraw now (blocks until the worker is done); returns the files written."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context('spawn'),
                initializer=_ignore_sigint)
        try:
            done = self._pool.submit(_plot_run_at, str(self.run.path), self.window)
            return [Path(p) for p in done.result(timeout=timeout_s)]
        except BrokenProcessPool:
            self._pool = None  # killed from outside: a new worker next time
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

