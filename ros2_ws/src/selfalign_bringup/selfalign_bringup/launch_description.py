"""Launch description shared by touch/grasp/push.launch.py (launch_ros; real ROS installs only).

All the wiring lives in ``selfalign_bringup.wiring``; this module only declares the launch
arguments, resolves them at launch time (``OpaqueFunction``) and turns each ``NodePlan`` into a
``launch_ros.actions.Node``. Importing it needs ``launch`` and ``launch_ros``.
"""

from __future__ import annotations

from dataclasses import fields, replace

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from selfalign_bringup.rundir import RunDir
from selfalign_bringup.wiring import ARG_HELP, Args, default_run_dir, plan, resolve

_TRUE = ('true', '1', 'yes', 'on')


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
    raw = {f.name: LaunchConfiguration(f.name).perform(context)
           for f in fields(Args) if f.name != 'task'}
    args = Args(task=task, llm=raw['llm'], model=raw['model'], base_url=raw['base_url'],
                obs=raw['obs'], driver=raw['driver'], run_dir=raw['run_dir'],
                seed=int(raw['seed']), use_sim_time=raw['use_sim_time'].lower() in _TRUE,
                replay_transcript=raw['replay_transcript']).validate()
    if not args.run_dir:
        args = replace(args, run_dir=default_run_dir(task))
    config = resolve(args)
    RunDir(args.run_dir).write_config(config)
    actions = [LogInfo(msg=f'selfalign: task={task} llm={args.llm} driver={args.driver} '
                           f'run_dir={args.run_dir}')]
    for node in plan(args, config):
        actions.append(Node(package=node.package, executable=node.executable, name=node.name,
                            parameters=[node.parameters], remappings=node.remappings,
                            output='screen', emulate_tty=True))
    if LaunchConfiguration('rviz').perform(context).lower() in _TRUE:
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
