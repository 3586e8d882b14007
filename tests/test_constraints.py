"""constraints.txt pins every package the set-up installs; this environment was built with it."""

from importlib import metadata
from pathlib import Path
import re

ROOT = Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / 'constraints.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, sep, version = line.partition('==')
            assert sep, f'constraints.txt: {line!r} is not an exact pin (name==version)'
            pins[_canonical(name)] = version
    return pins


def test_every_requirement_has_an_exact_pin():
    pins = _pins()
    names = []
    for line in (ROOT / 'requirements.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            names.append(_canonical(re.split(r'[\[<>=!~; ]', line, maxsplit=1)[0]))
    missing = [n for n in names if n not in pins]
    assert not missing, (f'{missing} are in requirements.txt but not pinned in constraints.txt: '
                         'run scripts/freeze_constraints.sh, then make test')


def test_the_installed_versions_are_the_pinned_ones():
    wrong = []
    for name, version in _pins().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f'{name} (pinned {version}): not installed')
            continue
        if have.split('+', 1)[0] != version:  # torch 2.13.0+cpu satisfies 2.13.0
            wrong.append(f'{name}: installed {have}, pinned {version}')
    assert not wrong, ('this environment differs from constraints.txt (re-run scripts/setup.sh):\n'
                       + '\n'.join(wrong))
