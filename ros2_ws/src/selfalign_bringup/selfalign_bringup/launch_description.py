"""Launch description shared by touch/grasp/push.launch.py (launch_ros; real ROS installs only).

All the wiring lives in ``selfalign_bringup.wiring``; this module only declares the launch
arguments, resolves them at launch time (``OpaqueFunction``) and turns each ``NodePlan`` into a
``launch_ros.actions.Node``. Importing it needs ``launch`` and ``launch_ros``.
"""

from __future__ import annotations

from dataclasses import fields, replace

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from selfalign_bringup.rundir import RunDir
from selfalign_bringup.wiring import (
    ARG_HELP,
    Args,
    args_from_strings,
    ConfigError,
    default_run_dir,
    parse_bool,
    plan,
    resolve,
)


def _arguments(task: str) -> list[DeclareLaunchArgument]:
    defaults = Args(task=task)
    out = []
    for f in fields(Args):
        if f.name == 'task':
            continue
        value = getattr(defaults, f.name)
        default = str(value).lower() if isinstance(value, bool) else str(value)
        out.append(DeclareLaunchArgument(f.name, default_value=default,
                                         description=ARG_HELP[f.name]))
    out.append(DeclareLaunchArgument('rviz', default_value='false',
                                     description='start rviz2 with rviz/selfalign.rviz'))
    return out


def _nodes(context, task: str):
    # Everything is checked before any node starts: a bad argument starts nothing.
    raw = {f.name: LaunchConfiguration(f.name).perform(context)
           for f in fields(Args) if f.name != 'task'}
    args = args_from_strings(task, raw)
    want_rviz = parse_bool('rviz', LaunchConfiguration('rviz').perform(context))
    if want_rviz:
        from ament_index_python.packages import get_package_prefix, PackageNotFoundError
        try:
            get_package_prefix('rviz2')
        except PackageNotFoundError:
            raise ConfigError('rviz:=true but rviz2 is not installed: sudo apt install '
                              'ros-jazzy-rviz2, or launch with rviz:=false') from None
    if not args.run_dir:
        args = replace(args, run_dir=default_run_dir(task))
    config = resolve(args)
    RunDir(args.run_dir).write_config(config)
    actions = [LogInfo(msg=f'selfalign: task={task} llm={args.llm} driver={args.driver} '
                           f'run_dir={args.run_dir}')]
    for node in plan(args, config):
        # one node gone (crashed, or failed its parameters) ends the run: none is left orphaned
        actions.append(Node(package=node.package, executable=node.executable, name=node.name,
                            namespace=node.namespace or None,
                            parameters=[node.parameters], remappings=node.remappings,
                            output='screen', emulate_tty=True,
                            on_exit=Shutdown(reason=f'{node.name} exited')))
    if want_rviz:
        from ament_index_python.packages import get_package_share_directory
        rviz = f'{get_package_share_directory("selfalign_bringup")}/rviz/selfalign.rviz'
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                            arguments=['-d', rviz],
                            parameters=[{'use_sim_time': args.use_sim_time}]))
    return actions


def generate(task: str) -> LaunchDescription:
    """The launch description of one task."""
    return LaunchDescription(_arguments(task) + [OpaqueFunction(function=_nodes,
                                                                kwargs={'task': task})])
