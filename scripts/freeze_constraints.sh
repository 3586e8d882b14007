#!/usr/bin/env bash
# Refresh constraints.txt: the exact version of every package the set-up installs.
#
# Builds a throw-away venv from requirements.txt alone (newest versions the ranges allow) and
# writes what it installed to constraints.txt. Then run `make test` (or `CI=true bash .ci/run`
# on a fresh clone): commit the new constraints.txt only when the suite passes with it.
# scripts/setup.sh installs requirements.txt *with* these constraints, so a fresh machine gets
# exactly what CI tested, not whatever is newest that day.
# Usage: scripts/freeze_constraints.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "[constraints] resolving requirements.txt in a fresh venv ($tmp)"
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt"
{
  echo "# Exact versions the test suite passed with; scripts/setup.sh installs with -c constraints.txt."
  echo "# Refresh: scripts/freeze_constraints.sh, then make test; commit both together."
  echo "# Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())'), written $(date -u +%Y-%m-%d)."
  # --all keeps pip and setuptools; local version labels (torch 2.13.0+cpu) are dropped so the
  # same file also fits an index that serves the wheel without the label.
  "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
    | sed -E 's/^([^=]+==[^+]+)\+.*$/\1/' | LC_ALL=C sort -f
} > "$root/constraints.txt.tmp"
mv "$root/constraints.txt.tmp" "$root/constraints.txt"
echo "[constraints] wrote constraints.txt ($(grep -vc '^#' "$root/constraints.txt") packages); now run: make test"
