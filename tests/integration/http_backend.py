"""A real HTTP backend for the proxy tests: uvicorn serving a small ASGI app, in its own process.

``python http_backend.py [--tls CERT KEY] [--host H] [--port P]`` binds 127.0.0.1 on a free port
(unless told otherwise) and prints
``PORT <n>`` once it accepts. What it answers:

- any path: JSON with the method, the raw path and query, the headers and the body's length and
  SHA-256, as the backend received them (the tests compare what the client sent with this);
- ``/redirect``: a 302 to ``http://<its own host:port>/landing`` (``Location`` and
  ``Content-Location``), what ``rewrite_redirects`` rewrites;
- ``/stream?chunks=N&size=S``: N chunks of S bytes, streamed (chunked);
- ``/slow?seconds=S``: answers after S seconds;
- ``/status/<code>``: that status, empty body;
- ``/ws``: a WebSocket that echoes every message.
"""

import argparse
import asyncio
import hashlib
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(receive, send)
        return
    path: str = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    digest = hashlib.sha256()
    length = 0
    while True:
        message = await receive()
        body = message.get("body", b"")
        digest.update(body)
        length += len(body)
        if not message.get("more_body"):
            break
    if path == "/redirect":
        host = dict(scope["headers"]).get(b"host", b"").decode()
        where = f"http://{host}/landing"
        await respond(
            send, 302, b"", [(b"location", where.encode()), (b"content-location", where.encode())]
        )
        return
    if path == "/stream":
        chunks, size = int(query.get("chunks", ["3"])[0]), int(query.get("size", ["10"])[0])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for index in range(chunks):
            await send(
                {
                    "type": "http.response.body",
                    "body": bytes([65 + index % 26]) * size,
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/slow":
        await asyncio.sleep(float(query.get("seconds", ["2"])[0]))
    if path.startswith("/status/"):
        await respond(send, int(path.rsplit("/", 1)[1]), b"", [])
        return
    echo = {
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_length": length,
        "body_sha256": digest.hexdigest(),
        "http_version": scope["http_version"],
    }
    await respond(send, 200, json.dumps(echo).encode(), [(b"content-type", b"application/json")])


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def websocket(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    config = uvicorn.Config(
        app,
        log_level="warning",
        ws="websockets-sansio",
        ssl_certfile=args.tls[0] if args.tls else None,
        ssl_keyfile=args.tls[1] if args.tls else None,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
