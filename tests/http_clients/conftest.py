"""One ``web`` + ``app`` pair per test module (``http_rig``): starting devices is the slow part."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_rig import Pair, web_and_app


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with web_and_app(tmp_path_factory.mktemp("http_clients")) as p:
        yield p
