"""PyBullet simulation of the selfalign tasks (no rclpy): world, config, camera, gym envs.

``PandaWorld`` (world.py) is the scene the ROS bridge and the gym envs drive; ``SimConfig``
(config.py) its validated settings; scripted.py holds ground-truth controllers for tests and
benchmarks. Importing this package registers the gymnasium ids ``SelfAlign/Touch-v0``,
``SelfAlign/GraspLift-v0``, ``SelfAlign/Push-v0`` and their ``...Pixels-v0`` variants (envs.py).
"""

from selfalign_bringup.sim.config import SimConfig
from selfalign_bringup.sim.envs import ENV_IDS, register_envs, SelfAlignEnv
from selfalign_bringup.sim.world import PandaWorld, StepResult

register_envs()

__all__ = ['ENV_IDS', 'PandaWorld', 'SelfAlignEnv', 'SimConfig', 'StepResult', 'register_envs']
