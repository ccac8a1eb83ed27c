"""A bare uvloop byte pipe to PostgreSQL: the floor for any Python proxy (bench/pg_relay.sh).

    python bench/pg_pipe.py LISTEN_PORT [TARGET_PORT]

Forwards bytes both ways and does nothing else: no parsing, no checks, no recording.
"""
from __future__ import annotations

import asyncio
import socket
import sys

import uvloop


def _nodelay(transport) -> None:
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Target(asyncio.Protocol):
    def __init__(self, client: Client):
        self.client = client

    def connection_made(self, transport):
        self.transport = transport
        _nodelay(transport)

    def data_received(self, data):
        self.client.transport.write(data)

    def connection_lost(self, exc):
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.target: Target | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport
        _nodelay(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self):
        _, self.target = await asyncio.get_running_loop().create_connection(
            lambda: Target(self), "127.0.0.1", self.target_port)
        for data in self.early:
            self.target.transport.write(data)

    def data_received(self, data):
        if self.target is None:
            self.early.append(data)
        else:
            self.target.transport.write(data)

    def connection_lost(self, exc):
        if self.target is not None:
            self.target.transport.close()


async def main(port: int, target_port: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: Client(target_port), "127.0.0.1", port)
    print(f"pipe listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5432))
