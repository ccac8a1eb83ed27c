"""The fast lane: a remembered plain statement (or an execute of a prepared statement
whose verdict is remembered) and its unmasked answer, handled in the transports'
callbacks, with no task switch, stream reader or framing in between.

Traffic from a runtime is mostly statements of a shape the session has already allowed
(app/gate/session_shapes.py) whose answers nothing masks. For those the Python path (commands.py) only
passes bytes on, but it wakes a task for the command and another for each piece of the
answer, and under a point-select loop that was most of the relay's own time. The lane
takes exactly that case, in `data_received`, and decides nothing itself: the session's
token stamp, the shape's verdict and its stamp, the answer's walk (plain.py) and the
recording are the Python path's own.

It takes a client's bytes only when they are one whole COM_QUERY packet, the Python
path is waiting for a command with nothing buffered, the token was checked under the
gate's current version (no store read is due), and the text has a remembered shape
without masks; or one whole COM_STMT_EXECUTE, under the same conditions, of a statement
whose verdict the session remembers (PreparedVerdicts: allowed outright, no masks, the
same stamp), without long data or a cursor. Anything else goes to the Python path's stream reader, as it would have
without the lane. While an answer is in flight on the lane, more bytes from the client
are held and handed to the Python path once the answer is through, in order.

AIRLOCK_RELAY_FASTLANE=0 turns it off (every command takes the Python path); the tests
run both ways.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time

from . import plain, wire
from .params import parse_execute

log = logging.getLogger(__name__)
_UTF8 = ("utf8", "utf8mb3", "utf8mb4")


def enabled() -> bool:
    return os.environ.get("AIRLOCK_RELAY_FASTLANE", "1").strip().lower() not in ("0", "false", "no", "off")


class _Side(asyncio.Protocol):
    """Stands in front of a transport's protocol (the stream reader's) and gives the lane
    first look at what arrives."""

    def __init__(self, lane: Lane, inner: asyncio.Protocol, take, client: bool):
        self.lane, self.inner, self._take, self.client = lane, inner, take, client

    def data_received(self, data: bytes) -> None:
        if not self._take(data):
            self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def connection_lost(self, exc) -> None:
        self.lane.lost()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        if self.client:
            self.lane.client_paused(True)

    def resume_writing(self) -> None:
        self.inner.resume_writing()
        if self.client:
            self.lane.client_paused(False)


class Lane:
    def __init__(self, commands):
        self.c = commands
        self.s = s = commands.s
        self.client = s.writer.transport
        self.target = commands.link.writer.transport
        self.sample_rows = s.cfg.record_rows
        self.limit = commands.limit
        self.packets: plain.Packets | None = None  # the answer in flight on the lane
        self.held: list[bytes] = []  # client bytes that came while it was in flight
        self.taken = 0  # statements the lane relayed (the session's summary)
        self.sql = ""
        self.rule: str | None = None
        self.params: list | None = None  # an execute's parameters as recorded (None: a text query)
        self.t0 = 0.0
        self._paused = False  # the target's reading, paused for a slow client
        self._client_inner = self.client.get_protocol()
        self._target_inner = self.target.get_protocol()
        self.client.set_protocol(_Side(self, self._client_inner, self._from_client, True))
        self.target.set_protocol(_Side(self, self._target_inner, self._from_target, False))

    def close(self) -> None:
        """Give the transports back to the stream readers (the session is ending)."""
        for transport, inner in ((self.client, self._client_inner), (self.target, self._target_inner)):
            if isinstance(transport.get_protocol(), _Side):
                transport.set_protocol(inner)

    # -- the client's side -------------------------------------------------------------

    def _from_client(self, data: bytes) -> bool:
        if self.packets is not None:
            self.held.append(data)
            return True
        if self._take(data):
            return True
        self.c.waiting = False  # the Python path has bytes of a command now, until it asks for the next
        return False

    def _take(self, data: bytes) -> bool:
        c, s = self.c, self.s
        n = len(data)
        # `waiting`: Commands.run is at the top of its loop. Nothing may be unread on either
        # side (the relay's own count, reader.py): these bytes must not overtake a command
        # already handed to the Python path (or the rest of one it is reading), nor the
        # answer be read after bytes the target sent before it.
        if (n < 5 or data[3] != 0 or (data[0] | data[1] << 8 | data[2] << 16) != n - 4
                or not c.waiting or c.stale or s.reader.pending or c.link.reader.pending):
            return False
        if data[4] == wire.COM_STMT_EXECUTE:
            return self._take_execute(data)
        if data[4] != wire.COM_QUERY:
            return False
        if not s.token_fresh():
            return False  # a store read is due: the Python path checks the token again
        try:
            text = data[5:].decode("utf-8") if s.charset in _UTF8 else data[5:].decode("latin-1")
        except UnicodeDecodeError:
            return False
        shape = c.shapes.lookup(text)
        if shape is None or shape.masks:
            return False
        c.statements += 1
        self._relay(data, text, shape.rule, None)
        return True

    def _take_execute(self, data: bytes) -> bool:
        """An execute of a prepared statement whose verdict the session remembers."""
        c = self.c
        if len(data) < 14 or not self.s.token_fresh():
            return False
        stmt_id = struct.unpack_from("<I", data, 5)[0]
        stmt = c.stmts.get(stmt_id)
        if stmt is None or stmt.long_data:
            return False
        remembered = c.verdicts.lookup(stmt_id)
        if remembered is None:
            return False
        try:  # the Python path's own parse (it would make the same of these bytes)
            flags, _, shown = parse_execute(data[4:], stmt)
        except wire.ProtocolError:
            return False  # the Python path refuses it
        if flags & 0x07:
            return False  # a cursor: refused by the Python path
        c.statements += 1
        c.remembered += 1
        self._relay(data, stmt.sql, remembered.rule, shown)
        return True

    def _relay(self, data: bytes, sql: str, rule: str | None, params: list | None) -> None:
        self.taken += 1
        self.sql, self.rule, self.params = sql, rule, params
        self.packets = plain.Packets(plain.PlainAnswer(self.sample_rows, self.limit))
        self.t0 = time.perf_counter()
        self.target.write(data)  # the client's packet as it came: one packet, numbered 0

    # -- the target's side -------------------------------------------------------------

    def _from_target(self, data: bytes) -> bool:
        packets = self.packets
        if packets is None:
            return False
        try:
            out = packets.feed(data)
        except wire.ProtocolError as exc:
            return self._broken(f"malformed packet ({exc})")
        walk = packets.walk
        if walk.done:  # the bookkeeping first: the client's next command may follow the write at once
            self.packets = None
            rec = self.s.rec
            if rec is not None:
                ms = round((time.perf_counter() - self.t0) * 1000, 3)
                params = self.params
                rec.event_later("output", plain.render_output, self.sql, ms, self.rule, [],
                                None if params is None else list(params), walk.kept, params is not None,
                                self.sample_rows)
            if bool(walk.status & wire.NO_BACKSLASH_ESCAPES) != self.s.mode.no_backslash_escapes:
                self.c.stale = True  # the Python path reads the server's state before the next command
        if out:
            self.client.write(out)
        if walk.done and self.held:
            held, self.held = b"".join(self.held), []
            if not self._from_client(held):
                self._client_inner.data_received(held)
        return True

    def client_paused(self, paused: bool) -> None:
        """A slow client: stop reading the answer until its buffer drains."""
        if paused and self.packets is not None and not self._paused:
            self._paused = True
            self.target.pause_reading()
        elif not paused and self._paused:
            self._paused = False
            self.target.resume_reading()

    def lost(self) -> None:
        if self.packets is not None:
            self.packets = None
            self._broken("the connection was lost with a statement in flight")

    def _broken(self, why: str) -> bool:
        log.info("mysql session %s: %s; closing it", self.s.client_addr, why)
        self.packets = None
        self.s.refuse(1835, f"airlock: {why}; the connection is closed", "08S01")
        self.s.end()
        return True
