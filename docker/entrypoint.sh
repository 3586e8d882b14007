#!/usr/bin/env bash
set -e
source /opt/ros/jazzy/setup.bash
source /selfalign/ros2_ws/install/setup.bash
exec "$@"
