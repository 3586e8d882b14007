"""setup.py for selfalign_reward."""

from setuptools import find_packages, setup

package_name = 'selfalign_reward'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    # reference reward templates are data (read as text, validated), not importable modules
    package_data={'selfalign_reward': ['templates/*.py']},
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='selfalign developers',
    maintainer_email='dev@selfalign.invalid',
    description=(
        'Reward templates (sandboxed LLM code), vectorised evaluation and Metro'
        'polis-Hastings self-alignment.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'reward_node = selfalign_reward.reward_node:main',
            'alignment_node = selfalign_reward.alignment_node:main',
        ],
    },
)
