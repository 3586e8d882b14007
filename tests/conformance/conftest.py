"""Fixtures of the robot-contract conformance suite: a driver under test and a probe node.

Which driver:
  * default: the PyBullet bridge, started per test module as a real process from its installed
    executable (``ros2_ws/install/selfalign_bringup/lib/selfalign_bringup/pybullet_bridge``) in
    the module's mode (``DRIVER_MODE``) with the module's parameters (``DRIVER_PARAMS``);
  * ``SELFALIGN_DRIVER_EXTERNAL=1``: a driver you started yourself (a real arm); nothing is
    started.  ``SELFALIGN_DRIVER_MODE`` (default ``realtime``) says how it steps; modules written
    for the other mode skip.  ``SELFALIGN_DRIVER_CAMERA=0`` skips the camera checks.

``SELFALIGN_DRIVER_NS`` (or ``--driver-ns``) is the namespace the contract lives under
(default: root).  Remember ROS_DOMAIN_ID: the repository conftest picks a random one per session
unless ``SELFALIGN_TEST_DOMAIN_ID`` is set — set it to your driver's domain for external runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import os
from pathlib import Path
import sys
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
# tests/ (rosproc) and this folder (contract_checks) are plain folders, not packages.
sys.path[:0] = [str(_HERE.parent), str(_HERE)]

from rosproc import NodeProcess, TestNode  # noqa: E402

EXTERNAL = os.environ.get('SELFALIGN_DRIVER_EXTERNAL', '0') == '1'


def pytest_addoption(parser: pytest.Parser) -> None:
    try:
        parser.addoption('--driver-ns', default=None,
                         help='namespace of the robot contract under test (default: root, or '
                         'SELFALIGN_DRIVER_NS)')
    except ValueError:  # already added by another conftest
        pass


def _namespace(config: pytest.Config) -> str:
    ns = config.getoption('--driver-ns', default=None)
    if ns is None:
        ns = os.environ.get('SELFALIGN_DRIVER_NS', '')
    ns = ns.strip().strip('/')
    return f'/{ns}' if ns else ''


@dataclass
class Driver:
    """The driver under test."""

    ns: str
    """Namespace prefix ('' or '/robot1')."""
    mode: str
    """'lockstep' or 'realtime'."""
    params: dict[str, Any]
    """Parameters it was started with (empty for an external driver)."""
    process: NodeProcess | None
    """The bridge process, None for an external driver."""
    camera: bool
    """Whether camera topics are expected."""

    def topic(self, contract_name: str) -> str:
        """Contract name (relative, selfalign_core.names) -> absolute name under the driver's
        namespace ('/joint_states', '/robot1/joint_states'); absolute names stay as they are."""
        if contract_name.startswith('/'):
            return contract_name
        return f'{self.ns}/{contract_name}'


@pytest.fixture(scope='module')
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """Start (or locate) the driver for this module; always stopped at module end."""
    mode = getattr(request.module, 'DRIVER_MODE', 'lockstep')
    params = dict(getattr(request.module, 'DRIVER_PARAMS', {}))
    ns = _namespace(request.config)
    if not EXTERNAL and getattr(request.module, 'DRIVER_NS', ''):
        ns = '/' + request.module.DRIVER_NS.strip('/')  # a module that checks a namespace
    if EXTERNAL:
        ext_mode = os.environ.get('SELFALIGN_DRIVER_MODE', 'realtime')
        if ext_mode != mode:
            pytest.skip(f'external driver runs {ext_mode}; this module checks {mode} mode')
        yield Driver(ns, mode, {}, None, os.environ.get('SELFALIGN_DRIVER_CAMERA', '1') == '1')
        return
    params['mode'] = mode
    proc = NodeProcess('selfalign_bringup', 'pybullet_bridge', params=params,
                       namespace=ns or None)
    proc.start()
    try:
        yield Driver(ns, mode, params, proc, bool(params.get('publish_camera', False)))
    finally:
        proc.stop()


@pytest.fixture(scope='module')
def probe(driver: Driver) -> Iterator[TestNode]:
    """A test node on a background executor, waiting until the driver's state topics are up."""
    node = TestNode('contract_probe')
    try:
        from selfalign_core import contract as C

        topics = [driver.topic(t) for t in (C.JOINT_STATES, C.EE_POSE, C.EE_WRENCH,
                                            C.OBJECT_POSE)]
        try:
            node.wait_for_topics(topics, timeout_s=30.0)
        except TimeoutError:
            out = driver.process.output() if driver.process else '(external driver)'
            alive = driver.process.alive() if driver.process else None
            pytest.fail(f'driver state topics {topics} did not appear (process alive: {alive});'
                        f' driver output:\n{out}')
        yield node
    finally:
        node.close()
