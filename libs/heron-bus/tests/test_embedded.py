import socket
from pathlib import Path

import pytest

from heron_bus import BusError
from heron_bus.embedded import EmbeddedNats


async def test_a_server_that_cannot_start_is_reported_with_its_output(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedNats(store_dir=tmp_path, port=taken.getsockname()[1])

        with pytest.raises(BusError, match=r"exited with 1: .*address already in use"):
            await server.start()


async def test_the_server_restarts_where_it_was(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path)
    async with server:
        url = server.url
        await server.stop()
        await server.start()

        assert server.url == url
        assert (tmp_path / "jetstream").is_dir()
