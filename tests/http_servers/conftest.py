"""One tailnet pair per test module (``serving_rig``): starting a tailnet takes seconds, a request ms."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_rig import Pair, tailnet_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with tailnet_pair(tmp_path_factory.mktemp("tailnet")) as p:
        yield p
