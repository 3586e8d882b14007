"""setup.py for selfalign_llm."""

from setuptools import find_packages, setup

package_name = 'selfalign_llm'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    package_data={'selfalign_llm': ['prompts/*.txt']},
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='selfalign developers',
    maintainer_email='dev@selfalign.invalid',
    description=(
        'LLM roles (propose reward, rank trajectories, analyse failure): OpenAI'
        '-compatible, scripted teacher, replay.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'llm_node = selfalign_llm.llm_node:main',
        ],
    },
)
