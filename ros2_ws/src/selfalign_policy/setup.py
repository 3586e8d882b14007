"""setup.py for selfalign_policy."""

from setuptools import find_packages, setup

package_name = 'selfalign_policy'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='selfalign developers',
    maintainer_email='dev@selfalign.invalid',
    description=(
        'DrQ-v2 agent, replay and the policy node that drives a robot over the '
        'robot contract.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'policy_node = selfalign_policy.policy_node:main',
            'deploy_node = selfalign_policy.deploy_node:main',
        ],
    },
)
