"""Fixtures of the localnet tests: a running local tailnet with short keep-alive and ephemeral grace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.localnet import LocalTailnet


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalTailnet]:
    with LocalTailnet(tmp_path, keepalive_interval=0.5, ephemeral_grace=0.2) as n:
        yield n
