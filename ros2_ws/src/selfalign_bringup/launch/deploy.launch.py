"""Deploy a trained policy on a real arm (driver:=external, default) or rehearse on the sim.

ros2 launch selfalign_bringup deploy.launch.py checkpoint:=runs/<run>/checkpoint.pt
    [task:=touch driver:=external|pybullet reset_mode:=scripted|operator obs:=state|pixels
     episodes:=0 rehearsal_latency_s:=0.05 randomize:=false]

deploy_node runs inference only (deterministic actor, steady timer, safety layer,
/selfalign/estop, observation watchdog); reset_node serves /selfalign/reset_episode on hardware.
The nodes and parameters come from ``selfalign_bringup.wiring.deploy_plan``.
"""

from dataclasses import fields

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from selfalign_bringup.wiring import (
    DEPLOY_ARG_HELP,
    deploy_args_from_strings,
    deploy_plan,
    DeployArgs,
)


def _nodes(context):
    # Everything is checked before any node starts: a bad argument starts nothing.
    raw = {f.name: LaunchConfiguration(f.name).perform(context) for f in fields(DeployArgs)}
    args = deploy_args_from_strings(raw)
    actions = [LogInfo(msg=f'selfalign deploy: {args}')]
    for node in deploy_plan(args):
        # one node gone ends the deployment: no reset_node left running without its policy
        actions.append(Node(package=node.package, executable=node.executable, name=node.name,
                            parameters=[node.parameters], remappings=node.remappings,
                            output='screen', emulate_tty=True,
                            on_exit=Shutdown(reason=f'{node.name} exited')))
    return actions


def generate_launch_description():
    defaults = DeployArgs()
    declared = []
    for f in fields(DeployArgs):
        value = getattr(defaults, f.name)
        default = str(value).lower() if isinstance(value, bool) else str(value)
        declared.append(DeclareLaunchArgument(f.name, default_value=default,
                                              description=DEPLOY_ARG_HELP[f.name]))
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
