"""A closed-loop load that ends cleanly: ``--concurrency`` keep-alive connections each send the same
request (read from stdin) again and again until ``--seconds`` have passed, then FINISH the request in
flight, so that every request started is counted and no work is left half done. CPU per request
measured around it has no edge bias, whatever the length of a request (wrk stops at its deadline and
drops what is in flight: fine for millisecond requests, wrong for streams that take a second).

Raw trio sockets, one process; prints one JSON line: requests, seconds, errors.

    python bench/loadgen.py --port PORT --concurrency 16 --seconds 4 < request.bin
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio


class Reader:
    """Reads whole HTTP/1.1 answers (Content-Length or chunked) from one stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.buffer += data

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._more()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def _take(self, count: int) -> None:
        while len(self.buffer) < count:
            await self._more()
        self.buffer = self.buffer[count:]

    async def answer(self) -> tuple[int, bool]:
        """The status, and whether the server closes the connection after it."""
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            while True:
                size = int((await self._line()).split(b";")[0], 16)
                await self._take(size + 2)
                if size == 0:
                    break
        elif b"content-length:" in headers:
            length = int(headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await self._take(length)
        return status, b"connection: close" in headers


async def load(port: int, request: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    counts = {"requests": 0, "non_2xx": 0, "errors": 0}
    started = trio.current_time()
    deadline = started + seconds

    async def worker() -> None:
        reader = None
        while trio.current_time() < deadline:
            try:
                if reader is None:
                    reader = Reader(await trio.open_tcp_stream("127.0.0.1", port))
                await reader.stream.send_all(request)
                status, close = await reader.answer()
                counts["requests"] += 1
                counts["non_2xx"] += not 200 <= status < 300
                if close:
                    await reader.stream.aclose()
                    reader = None
            except (OSError, ConnectionError, trio.BrokenResourceError):
                counts["errors"] += 1
                reader = None
        if reader is not None:
            await reader.stream.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return {**counts, "seconds": round(trio.current_time() - started, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    request = sys.stdin.buffer.read()
    print(json.dumps(trio.run(load, args.port, request, args.concurrency, args.seconds)))


if __name__ == "__main__":
    main()
