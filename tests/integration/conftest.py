"""The integration tests run on uvloop, the event loop the edge and the agent run in production:
its transports are not asyncio's classes, and its subprocess pipes are socketpairs."""

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import uvloop

HERE = Path(__file__).parent


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], object]] | None:
    if HERE in item.path.parents:
        return {"uvloop": uvloop.new_event_loop}
    return None
