"""CPU cost of the relay's own work per statement, without sockets (for profiling).

Logs in through a real relay session to the real PostgreSQL, then swaps both
connections' transports for in-memory ones and replays one pgbench -S transaction
(simple protocol: Query -> RowDescription, DataRow, CommandComplete, ReadyForQuery)
N times. Prints microseconds per statement; `--profile` adds a cProfile listing.

    export AIRLOCK_HOME=$(mktemp -d) AIRLOCK_SECRET_KEY=$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
    createdb -h 127.0.0.1 -U postgres bench && pgbench -h 127.0.0.1 -U postgres -i -s 10 bench
    TOKEN=$(python bench/pg_relay_setup.py init bench)
    python bench/pg_relay_cpu.py $TOKEN [N] [--profile]

bench/pg_relay.sh measures throughput; this isolates the Python part of it.
"""
from __future__ import annotations

import asyncio
import cProfile
import pstats
import random
import struct
import sys
import time

from app.recording import recorder, use_writer_process
from app.relay.postgres import protocol as pgwire
from app.relay.postgres.listener import PostgresRelay
from app.relay.postgres.session import Session
from app.relay.server import tune_gc
from app.relay.postgres.wire import Wire


class _Transport:
    def __init__(self):
        self.sent = 0

    def write(self, data):
        self.sent += len(data)

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self):
        return False

    def close(self):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


ROW_DESCRIPTION = _frame(b"T", struct.pack("!h", 1) + b"abalance\0" + struct.pack("!ihihih", 16390, 2, 23, 4, -1, 0))
ANSWER = (ROW_DESCRIPTION + _frame(b"D", struct.pack("!hi", 1, 1) + b"0") + _frame(b"C", b"SELECT 1\0")
          + _frame(b"Z", b"I"))


async def main(token: str, n: int, profile: bool) -> None:
    use_writer_process()  # as `airlock relay` does
    relay = PostgresRelay()
    client = Wire(relay.cfg.max_message)
    client.connection_made(_Transport())
    session = Session(relay, client, ("127.0.0.1", 1), use_tls=True)
    params = b"user\0bench\0database\0bench\0application_name\0pgbench\0\0"
    client.data_received(struct.pack("!ii", len(params) + 8, 196608) + params)
    client.data_received(_frame(b"p", token.encode() + b"\0"))
    login = asyncio.create_task(session.run())
    while session.conv is None or session.conv.done is None:
        await asyncio.sleep(0.01)
        if login.done():
            raise SystemExit(f"login failed: {client.transport.sent} bytes sent")
    target = session.link.wire
    real = target.transport
    real.set_protocol(asyncio.Protocol())  # its connection_lost must not reach the wire
    real.close()
    target.connection_made(_Transport())
    queries = [pgwire.query_message(f"SELECT abalance FROM pgbench_accounts WHERE aid = {random.randint(1, 10**6)};")
               for _ in range(1000)]

    conv = session.conv

    split = [0.0, 0.0]  # CPU seconds: statements in, answers out

    async def run(count: int) -> float:
        clock = time.thread_time  # this thread's CPU: steadier than the wall clock here
        started = clock()
        for i in range(count):
            t0 = clock()
            client.data_received(queries[i % 1000])
            t1 = clock()
            while conv._waiting is not None:  # the gate re-reads the store version now and then
                await asyncio.sleep(0)
            t2 = clock()
            target.data_received(ANSWER)
            split[0] += t1 - t0
            split[1] += clock() - t2
            if conv.done.done():
                raise SystemExit(f"the session ended: {conv.done.exception()!r}")
        return clock() - started

    await run(5000)  # warm the caches
    tune_gc()  # as `airlock relay` does once its listeners run
    split[:] = [0.0, 0.0]
    recorder().flush()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    elapsed = await run(n)
    if prof:
        prof.disable()
    t0 = time.perf_counter()
    recorder().flush()
    flushed = time.perf_counter() - t0
    print(f"relay work: {elapsed / n * 1e6:.1f} us/statement (statement {split[0] / n * 1e6:.1f}, "
          f"answer {split[1] / n * 1e6:.1f}); recording flush: {flushed / n * 1e6:.1f} us/statement")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    session.shutdown()
    login.cancel()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    import uvloop
    uvloop.run(main(args[0], int(args[1]) if len(args) > 1 else 20000, "--profile" in sys.argv))
