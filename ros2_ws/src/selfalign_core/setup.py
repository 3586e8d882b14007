"""setup.py for selfalign_core."""

from setuptools import find_packages, setup

package_name = 'selfalign_core'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='selfalign developers',
    maintainer_email='dev@selfalign.invalid',
    description='The ground floor every selfalign package shares: robot contract, QoS, feature '
                'vocabulary, task judgement, episode records, executors and node start-up.',
    license='Apache-2.0',
    tests_require=['pytest'],
)
