"""setup.py for selfalign_bringup."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'selfalign_bringup'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
        ('share/' + package_name + '/rviz', glob('rviz/*.rviz')),
    ],
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='selfalign developers',
    maintainer_email='dev@selfalign.invalid',
    description=(
        'PyBullet bridge (robot contract), task scenes, launch files, configs, '
        'rviz and the all-in-one train runner.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'pybullet_bridge = selfalign_bringup.pybullet_bridge:main',
            'train = selfalign_bringup.train:main',
            'monitor_node = selfalign_bringup.monitor_node:main',
            'reset_node = selfalign_bringup.reset_node:main',
        ],
    },
)
