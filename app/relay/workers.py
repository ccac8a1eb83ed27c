"""Worker processes that share the relay's listening sockets.

One relay process is one event loop on one core, and the relay is CPU-bound (each
statement is parsed, checked and recorded in Python). `run_workers` forks N workers
after the parent has bound the sockets, so they all accept from the same queues; the
parent only restarts workers that die and passes signals on.

`WorkerLink` is what a worker knows about the others: how many sessions each holds (a
busier worker lets a new connection go to a quieter one), and a datagram channel per
worker, because a CancelRequest arrives on a new connection that any worker may accept:
a worker that holds no session with that key passes it to all the others.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import struct
import time
from typing import Callable

log = logging.getLogger(__name__)

MAX_WORKERS = 8
RESTART_DELAY = 1.0
_KEY = struct.Struct("!ii")


def worker_count(variable: str = "AIRLOCK_RELAY_WORKERS") -> int:
    """Workers to run: `variable` if set, else one per core (at most MAX_WORKERS)."""
    raw = os.environ.get(variable, "").strip()
    try:
        n = int(raw) if raw else (os.cpu_count() or 1)
    except ValueError:
        raise ValueError(f"{variable} must be a whole number, got {raw!r}") from None
    return max(1, min(n, MAX_WORKERS))


class WorkerLink:
    def __init__(self, index: int = 0, count: int = 1, sessions=None, channels=None):
        self.index, self.count = index, count
        self._sessions = sessions  # shared array of session counts, one slot per worker
        self._channels = channels or []  # (receiving end, sending end) per worker

    @staticmethod
    def new_key(pid: int) -> tuple[int, int]:
        """A BackendKeyData for a session whose target backend is `pid`: the client sees
        the server's real pid (pg_terminate_backend, pg_stat_activity and notification
        pids line up), with a random 32-bit secret of the relay's own, as strong as
        PostgreSQL's. The target's own secret never leaves the relay."""
        return pid, secrets.randbits(32) - (1 << 31)

    def session_opened(self, delta: int = 1) -> None:
        if self._sessions is not None:
            self._sessions[self.index] += delta

    def accept_delay(self, per_connection: float = 0.002, most: float = 0.02) -> float:
        """Seconds to wait before taking a new connection: busier workers let others go first."""
        if self._sessions is None:
            return 0.0
        mine = self._sessions[self.index]
        extra = mine - min(self._sessions[:])
        return min(per_connection * extra, most) if extra > 0 else 0.0

    def forward_cancel(self, pid: int, secret: int) -> None:
        """A CancelRequest for no session of this worker: every other worker checks its
        own sessions (the key says nothing about its worker, so it goes to all)."""
        message = _KEY.pack(pid, secret)
        for index, (_, send) in enumerate(self._channels):
            if index != self.index:
                try:
                    send.send(message)
                except OSError:
                    pass

    def listen_for_cancels(self, loop, callback: Callable[[int, int], None]) -> None:
        if not self._channels:
            return
        sock = self._channels[self.index][0]

        def readable() -> None:
            try:
                while True:
                    callback(*_KEY.unpack(sock.recv(_KEY.size)))
            except (BlockingIOError, struct.error):
                pass

        loop.add_reader(sock.fileno(), readable)


PR_SET_PDEATHSIG = 1


def _end_with(parent: int) -> None:
    """Have the kernel stop this worker when its parent dies. A parent killed outright
    (a supervisor's SIGKILL after its grace) cannot stop its workers, and an orphan would
    go on taking connections from the shared socket that nobody counts, restarts or stops."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent stops its workers itself
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def run_workers(count: int, child: Callable[[WorkerLink], None], name: str = "relay",
                on_death: Callable[[int], None] | None = None) -> int:
    """Fork `count` workers running `child(link)`; restart any that dies (after
    `on_death(pid)`, in the parent); stop on a signal."""
    sessions = multiprocessing.Array("i", count, lock=False)
    channels = []
    for _ in range(count):
        receive, send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        receive.setblocking(False)
        send.setblocking(False)
        channels.append((receive, send))
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    parent = os.getpid()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _end_with(parent)
            code = 0
            try:
                child(WorkerLink(index, count, sessions, channels))
            except BaseException:  # noqa: BLE001 - report, then leave without the parent's cleanup
                log.exception("%s worker %d failed", name, index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        sessions[index] = 0
        children[pid] = index

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        spawn(index)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        if on_death is not None:
            try:
                on_death(pid)
            except Exception:  # noqa: BLE001 - restarting the worker matters more
                log.exception("%s worker %d: cleaning up after it failed", name, index)
        if not stopping:
            log.warning("%s worker %d ended (status %s); restarting it", name, index, status)
            failed = True
            time.sleep(RESTART_DELAY)
            if not stopping:
                spawn(index)
    return 1 if failed and not stopping else 0
