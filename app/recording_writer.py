"""The recording writer in a child process: the relay's choice.

A relay worker records every statement, thousands a second. Written from a thread of
the relay, the store work competed with the event loop for the GIL, and the loop
waited on each hand-off: under pgbench it cost the relay about a third of its
throughput. `WriterProcess` is the recorder's sink instead. It ships each batch to a
child process, `python -m app.recording_writer`, which applies it with a
`StoreWriter` and answers with what it could not write.

The pipe carries length-prefixed pickles: the child is our own and reads only from
its parent. A batch counts as written once the child has answered, so a child that
dies loses nothing: the batch goes back to the recorder and a new child takes it. The
child ignores SIGINT and SIGTERM, so that it can write what its parent flushes while
it stops, and ends when its parent closes the pipe or dies.

A parent that stops says goodbye first (an empty message). A pipe that ends without
one means the parent died (SIGKILL, a crash): its sessions will never be closed, so
the child, the last process that writes them, seals them as ended abnormally with
the digest of what it wrote (app/recording_seal.py).
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")


def _send(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return payload


class WriterProcess:
    """A recorder sink that writes through a child process (started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the writer thread and flush() share the pipe
        self._child: subprocess.Popen | None = None
        self.failures = 0

    def write(self, batch: list[Any]) -> list[Any]:
        try:
            payload = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - something an adapter recorded does not pickle: write it here
            log.exception("a recording batch cannot go to the writer process; writing it in this one")
            from app.recording_store import StoreWriter

            return StoreWriter().write(batch)
        with self._lock:
            try:
                child = self._child or self._start()
                _send(child.stdin, payload)
                answer = _receive(child.stdout)
                if answer is None:
                    raise EOFError("the recording writer ended")
                kept, self.failures = pickle.loads(answer)
                return kept
            except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
                log.warning("recording writer process failed (%s); restarting it, %d items kept", exc, len(batch))
                self._stop_child()
                self.failures += 1
                return batch

    def close(self) -> None:
        with self._lock:
            child, self._child = self._child, None
            if child is None:
                return
            try:
                _send(child.stdin, b"")  # goodbye: a clean stop, not a death
                child.stdin.close()  # the child finishes its batch and ends
                child.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                child.kill()
                child.wait()

    def _start(self) -> subprocess.Popen:
        self._child = subprocess.Popen([sys.executable, "-m", "app.recording_writer"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=os.environ.copy())
        return self._child

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                try:
                    stream.close()
                except OSError:
                    pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Answers go to the parent on our own copy of stdout; a stray print goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer

    from app.recording_store import StoreWriter

    writer = StoreWriter()
    while True:
        payload = _receive(requests)
        if payload is None:
            if writer.open_sessions:
                _seal_after_parent_died(writer)
            return
        if not payload:  # goodbye
            return
        kept = writer.write(pickle.loads(payload))
        _send(answers, pickle.dumps((kept, writer.failures), protocol=pickle.HIGHEST_PROTOCOL))


def _seal_after_parent_died(writer) -> None:
    """A few tries (the store may be blipping); after that, the lease: the scheduler's
    seal_orphans takes them once the dead parent's heartbeat is a lease old."""
    reason = "the process that recorded it ended abnormally"
    for attempt in range(5):
        try:
            writer.seal_open(reason)
            return
        except Exception:  # noqa: BLE001 - see above
            log.exception("sealing the recordings of a dead parent failed (attempt %d)", attempt + 1)
            time.sleep(1.0)


if __name__ == "__main__":
    main()
