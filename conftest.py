"""Repository-wide pytest set-up: every test session gets its own ROS 2 graph.

Tests that start ROS processes inherit ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE from
os.environ, so setting them here (before any rclpy import) isolates the whole session from other
ROS processes on the machine and keeps discovery on loopback. A user's explicit
SELFALIGN_TEST_DOMAIN_ID wins.
"""

import os
from pathlib import Path
import random
import sys

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_DOMAIN_ID'] = os.environ.get(
    'SELFALIGN_TEST_DOMAIN_ID', str(random.SystemRandom().randint(110, 160)))
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')

# Shared test helpers (tests/rosproc.py) import as `tests.rosproc` from any test directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))
