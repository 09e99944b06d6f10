"""The connection-rate client of ``bench/l4.py``, run in the client namespace as its own process.

``l4.py`` starts ``--clients`` of these at once (``ip netns exec <ns> <venv python>
bench/_l4_client.py HOST PORT …``), each keeping ``--concurrency`` connections going: connect,
read until the server closes, compare what came with ``--expect``, close, start the next.
The server speaks first and closes (a banner, as SMTP or SSH begin), so the proxy in between
carries a whole TCP connection's life: handshake, the dial through to the backend, data one way,
the close coming back. Bounded in time and in count: no connection starts after ``--seconds``
or once ``--max`` have started; each one has ``--timeout`` to finish.

Prints one line, ``CONN {json}``: how many finished with the expected bytes (``ok``), how many
failed and why, the seconds from the start to the last one's end, and the ok connections' times
from the start of the connect to the close in microseconds, as a histogram (``latency_counts``:
[microseconds rounded to three significant digits, count] pairs), so that the line stays a few
KiB however many connections there were (a line of every latency passed 64 KiB and once came
back garbled).
"""

import argparse
import asyncio
import errno
import functools
import json
import sys
import time
from collections.abc import Sequence

import uvloop


class _Probe(asyncio.Protocol):
    """Collects what the server sends until it closes; the result goes to ``done``."""

    def __init__(self, done: asyncio.Future[bytes]) -> None:
        self.done = done
        self.received = bytearray()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(bytes(self.received))
        else:
            self.done.set_exception(exc)


class Tally:
    def __init__(self) -> None:
        self.started = 0
        self.ok = 0
        self.wrong = 0
        self.timeouts = 0
        self.errors: dict[str, int] = {}
        self.latency_counts: dict[int, int] = {}


async def _slot(args: argparse.Namespace, expect: bytes, deadline: float, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline and tally.started < args.max:
        tally.started += 1
        began = time.perf_counter_ns()
        try:
            async with asyncio.timeout(args.timeout):
                done: asyncio.Future[bytes] = loop.create_future()
                transport, _ = await loop.create_connection(
                    functools.partial(_Probe, done), args.host, args.port
                )
                try:
                    received = await done
                finally:
                    transport.close()
        except TimeoutError:
            tally.timeouts += 1
            continue
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            tally.errors[name] = tally.errors.get(name, 0) + 1
            continue
        if received != expect:
            tally.wrong += 1
            continue
        tally.ok += 1
        bucket = _three_digits((time.perf_counter_ns() - began) // 1000)
        tally.latency_counts[bucket] = tally.latency_counts.get(bucket, 0) + 1


async def run(args: argparse.Namespace) -> dict[str, object]:
    expect = bytes.fromhex(args.expect)
    if args.start_at:  # all the bench's clients start together
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
    tally = Tally()
    started = time.monotonic()
    deadline = started + args.seconds
    async with asyncio.TaskGroup() as group:
        for _ in range(args.concurrency):
            group.create_task(_slot(args, expect, deadline, tally))
    return {
        "ok": tally.ok,
        "wrong": tally.wrong,
        "timeouts": tally.timeouts,
        "errors": tally.errors,
        "seconds": time.monotonic() - started,
        "latency_counts": sorted(tally.latency_counts.items()),
    }


def _three_digits(value: int) -> int:
    """``value`` rounded to three significant digits: 1234 -> 1230, 98765 -> 98800."""
    step = int(10 ** max(len(str(value)) - 3, 0))
    return (value + step // 2) // step * step


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, required=True, help="start none after this")
    parser.add_argument("--concurrency", type=int, default=16, help="connections at once")
    parser.add_argument("--max", type=int, default=1_000_000, help="start at most this many")
    parser.add_argument("--timeout", type=float, default=5.0, help="per connection")
    parser.add_argument("--expect", required=True, help="what the server sends, in hex")
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() to start at")
    args = parser.parse_args(argv)
    result = uvloop.run(run(args))
    sys.stdout.write("CONN " + json.dumps(result, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
