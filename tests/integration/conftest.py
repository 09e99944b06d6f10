"""The integration tests run on uvloop, the event loop the edge and the agent run in production:
its transports are not asyncio's classes, and its subprocess pipes are socketpairs.

``backend`` (the HTTP backend that echoes what it received, ``http_backend.py``) and ``pki``
(a CA and certificates) are shared by the edge's HTTP tests, once per module."""

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import uvloop
from edge_harness import Pki, backend_process

HERE = Path(__file__).parent


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], object]] | None:
    if HERE in item.path.parents:
        return {"uvloop": uvloop.new_event_loop}
    return None


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    with backend_process() as port:
        yield port


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()
