"""The Serve tests' shared rig: one tailnet per test module (``srv`` serves, ``cli`` calls), ``srv``
with a test CA as its certificate provider, and its serve config cleared after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytsnet import ActorDevice
from pytsnet.testing.serve import TestCA
from pytsnet.testing.tailnet import Tailnet, local_tailnet


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    with local_tailnet(tmp_path_factory.mktemp("serve"), ["srv", "cli"]) as t:
        yield t


@pytest.fixture(scope="module")
def ca(tn: Tailnet) -> TestCA:
    ca = TestCA()
    tn["srv"].serve_cert_provider = ca.provider
    return ca


@pytest.fixture
def srv(tn: Tailnet, ca: TestCA) -> Iterator[ActorDevice]:
    dev = tn["srv"]
    yield dev
    dev.set_serve_config_blocking(None)
