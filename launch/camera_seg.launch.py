"""Start seg_node on the configured cameras; optionally RViz2 and a bag replay.

All decisions live in seg_node.ros.launch_config (tested without launch); this file only maps
them onto launch actions.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from seg_node.ros.launch_config import LAUNCH_ARGUMENTS, launch_plan


def _setup(context):
    arguments = {name: LaunchConfiguration(name).perform(context) for name, _, _ in LAUNCH_ARGUMENTS}
    plan = launch_plan(arguments, get_package_share_directory('seg_node'))
    # The node turns third-party telemetry off itself; passing it here keeps that true for any
    # wrapper (a prefix, a container entry point) that imports a dependency before seg_node.
    actions = [Node(package='seg_node', executable='seg_node', name='seg_node', output='screen',
                    parameters=plan.parameters, arguments=plan.node_arguments,
                    additional_env=plan.environment)]
    if plan.rviz_config:
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                            arguments=['--display-config', plan.rviz_config]))
    if plan.bag_command:
        actions.append(ExecuteProcess(cmd=plan.bag_command, output='screen'))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_setup)])
