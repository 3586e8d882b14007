# Source this (bash) to use selfalign from the pip-only set-up: `source scripts/env.sh`.
# Idempotent. A real Jazzy install instead sources /opt/ros/jazzy/setup.bash and
# ros2_ws/install/setup.bash.
_sa_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_sa_venv="${SELFALIGN_VENV:-$_sa_root/.venv}"
export VIRTUAL_ENV="$_sa_venv"
case ":$PATH:" in *":$_sa_venv/bin:"*) ;; *) export PATH="$_sa_venv/bin:$PATH" ;; esac
case ":$PATH:" in *":$_sa_root/bin:"*) ;; *) export PATH="$_sa_root/bin:$PATH" ;; esac
# The ROS wheels install their share/ and lib/ into the venv prefix.
case ":${AMENT_PREFIX_PATH:-}:" in *":$_sa_venv:"*) ;; *)
  export AMENT_PREFIX_PATH="$_sa_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
case ":${CMAKE_PREFIX_PATH:-}:" in *":$_sa_venv:"*) ;; *)
  export CMAKE_PREFIX_PATH="$_sa_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;; esac
if [ -f "$_sa_root/ros2_ws/install/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  COLCON_CURRENT_PREFIX="$_sa_root/ros2_ws/install" . "$_sa_root/ros2_ws/install/local_setup.bash"
fi
# Stay on this machine and off other people's ROS graphs unless the user says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($(id -u) + 17) % 100 + 1 ))}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
unset _sa_root _sa_venv
