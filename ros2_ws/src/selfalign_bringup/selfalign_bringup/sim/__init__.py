"""PyBullet simulation of the selfalign tasks (no rclpy): world, config, camera, gym envs.

Importing this package registers the gymnasium ids ``SelfAlign/Touch-v0``,
``SelfAlign/GraspLift-v0``, ``SelfAlign/Push-v0`` and their ``...Pixels-v0`` variants.
"""

from selfalign_bringup.sim.config import SimConfig
from selfalign_bringup.sim.world import PandaWorld, StepResult

__all__ = ['PandaWorld', 'SimConfig', 'StepResult']
