#!/usr/bin/env bash
# Lint + the whole test suite (after scripts/setup.sh). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
set +u
# shellcheck disable=SC1091
source scripts/env.sh
set -u
echo "[test] ruff check (ament settings: line length 99, single quotes, sorted imports)"
ruff check .
echo "[test] pytest (ROS_DOMAIN_ID chosen per session, discovery on localhost)"
exec python -m pytest "$@"
