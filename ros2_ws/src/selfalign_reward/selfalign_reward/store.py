"""The reward in force: template + θ + version, with the checks reward_node applies to changes.

Pure (no rclpy). ``RewardStore.set_params`` accepts a partial θ only when every name exists and
every value is inside its range; ``adopt`` switches to a new template only when it validates, so
the last good reward stays in force otherwise. Every successful change bumps ``version``.
``save``/``restore`` persist the reward in force (a run's ``reward_state.json``) so that a resumed
run continues with the same code, θ and version instead of a fresh proposal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import json
import os
from pathlib import Path
import threading

from selfalign_reward.sandbox import validate_template
from selfalign_reward.template import RewardTemplate, TemplateError


@dataclass(frozen=True)
class RewardState:
    """A snapshot of the reward in force."""

    template: RewardTemplate
    theta: dict[str, float]
    version: int
    source: str


class RewardStore:
    """Thread-safe holder of the current reward; ``validate`` is injectable for tests."""

    def __init__(self, validate: Callable[[str], RewardTemplate] = validate_template) -> None:
        self._validate = validate
        self._lock = threading.Lock()
        self._state: RewardState | None = None

    @property
    def state(self) -> RewardState | None:
        with self._lock:
            return self._state

    def adopt(self, code: str, source: str, theta: dict[str, float] | None = None
              ) -> tuple[bool, str]:
        """Validate ``code`` and make it the reward in force (θ = its initial values unless given).

        Returns (True, '') or (False, the TemplateError text); on failure nothing changes.
        """
        try:
            template = self._validate(code)
        except TemplateError as exc:
            return False, str(exc)
        values = template.initial_theta()
        if theta:
            for name, value in theta.items():
                if name in values and template.spec(name).contains(float(value)):
                    values[name] = float(value)
        with self._lock:
            version = 0 if self._state is None else self._state.version + 1
            self._state = RewardState(template, values, version, source)
        return True, ''

    def set_params(self, names: list[str], values: list[float]) -> tuple[bool, str, int]:
        """Set some parameters; (success, message, version in force). Nothing changes on error."""
        with self._lock:
            state = self._state
            if state is None:
                return False, 'no reward in force yet', 0
            if not names:
                return False, 'param_names is empty; give at least one parameter', state.version
            if len(names) != len(values):
                return (False, f'{len(names)} param_names but {len(values)} param_values',
                        state.version)
            theta = dict(state.theta)
            for name, value in zip(names, values):
                try:
                    spec = state.template.spec(name)
                except KeyError:
                    return (False, f'unknown parameter {name!r}; parameters are '
                            f'{list(state.template.param_names)}', state.version)
                if not spec.contains(float(value)):
                    return (False, f'{name} = {value} is outside its range [{spec.lower}, '
                            f'{spec.upper}]', state.version)
                theta[name] = float(value)
            self._state = RewardState(state.template, theta, state.version + 1, state.source)
            return True, '', self._state.version

    def save(self, path: str | os.PathLike) -> None:
        """Write the reward in force to ``path`` as JSON, atomically (tmp file + rename)."""
        state = self.state
        if state is None:
            return
        path = Path(path)
        tmp = path.with_name(path.name + '.tmp')
        tmp.write_text(json.dumps({'code': state.template.code, 'theta': state.theta,
                                   'version': state.version, 'source': state.source}, indent=1))
        os.replace(tmp, path)

    def restore(self, path: str | os.PathLike) -> tuple[bool, str]:
        """Make the reward saved at ``path`` the one in force (re-validated); (ok, why not)."""
        try:
            saved = json.loads(Path(path).read_text())
            code, theta = saved['code'], dict(saved['theta'])
            version, source = int(saved['version']), str(saved['source'])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return False, f'{path}: cannot read a saved reward ({exc})'
        ok, error = self.adopt(code, source, theta)
        if not ok:
            return False, f'{path}: saved reward no longer validates: {error}'
        with self._lock:
            self._state = RewardState(self._state.template, self._state.theta, version, source)
        return True, ''
