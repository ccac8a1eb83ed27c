"""Reading statements as the target reads them (parse parity), for one session.

The relay decodes and classifies a statement's bytes under the session state the
target will use for them: the client encoding and `standard_conforming_strings` the
target last confirmed in ParameterStatus. Where the two could read a text differently
the statement is refused, whatever the policy says:

- while the confirmed client encoding is not ASCII-safe (app/sql/pg_session.py) or has
  no decoder here, or standard_conforming_strings is off (a role or database setting);
- a statement that would switch to such a state ("parser_divergence"), by SET, SET
  NAMES, set_config(), RESET, ALTER ROLE/DATABASE/SYSTEM ... SET, or startup settings
  (`client_encoding`, PGCLIENTENCODING, `options=-c ...`).

A statement that may change either setting ("reparse") is a barrier: the target reads
the next message in the new state, so the relay reads nothing more until the target's
ReadyForQuery (with its ParameterStatus) is in (conversation.py).
"""
from __future__ import annotations

from app.sql.pg_session import codec, encoding_value_safe
from app.types import Operation

from .checks import operations, settings_of
from .protocol import error_response

DIVERGENCE = "parser_divergence"
REPARSE = "reparse"


class Reading:
    """How the target reads this session's text now, as it last confirmed."""

    __slots__ = ("encoding", "server_encoding", "codec", "conforming")

    def __init__(self) -> None:
        self.encoding = self.server_encoding = "UTF8"
        self.codec: str | None = "utf-8"
        self.conforming = True

    def parameter(self, name: bytes, value: str) -> None:
        if name == b"client_encoding":
            self.encoding = value
        elif name == b"server_encoding":
            self.server_encoding = value
        elif name == b"standard_conforming_strings":
            self.conforming = value.strip().lower() == "on"
            return
        else:
            return
        self.codec = codec(self.encoding) if encoding_value_safe(self.encoding) else None
        if self.encoding.upper() == "SQL_ASCII" and self.server_encoding.upper() != "SQL_ASCII":
            # No conversion: the server checks and reads the bytes in its own encoding.
            self.codec = codec(self.server_encoding) if encoding_value_safe(self.server_encoding) else None

    def decode(self, raw) -> str | None:
        """The statement text as the target reads it, or None when it must be refused."""
        if self.codec is None or not self.conforming:
            return None
        try:
            return str(raw, self.codec)
        except UnicodeDecodeError:
            return None

    def refusal(self) -> bytes:
        """Why `decode` gave None."""
        if not self.conforming:
            return error_response(
                "42501", "airlock: standard_conforming_strings is off on the target, so the target could read "
                "string literals differently from airlock; statements are refused while it is off",
                hint="a role or database setting turned it off: ALTER ROLE ... RESET standard_conforming_strings")
        if self.codec is None:
            return error_response(
                "42501", f"airlock: the client encoding {self.encoding} is refused: in it a byte below 0x80 need "
                "not be ASCII, or airlock cannot decode it", hint="use UTF8 (client_encoding=UTF8)")
        return error_response("22021", f"airlock: the statement is not valid {self.encoding}")


def divergence(ops: list[Operation]) -> bytes | None:
    """A refusal if any statement could make the target read later text otherwise."""
    for op in ops:
        if DIVERGENCE in op.attributes:
            return error_response(
                "42501", f"airlock: refused: {_what(op.text)} could make the target read statements differently "
                "from airlock (only ASCII-safe client encodings, and standard_conforming_strings on)",
                detail="statement: " + op.text[:200])
    return None


def reparses(ops: list[Operation]) -> bool:
    return any(REPARSE in op.attributes for op in ops)


def _what(text: str) -> str:
    return "this statement" if len(text) > 60 else repr(text)


def startup_divergence(params: dict[str, str]) -> str | None:
    """Why a startup setting (a parameter, PGCLIENTENCODING, `options=-c`) is refused
    for parse parity, or None. Malformed options are left to Checker.check_settings."""
    try:
        sets = settings_of(params)
    except ValueError:
        return None
    for name, value in sets:
        sql = f'SET "{name.replace(chr(34), chr(34) * 2)}" TO \'{value.replace(chr(39), chr(39) * 2)}\''
        if any(DIVERGENCE in op.attributes for op in operations(sql, "")):
            return (f"the startup setting {name}={value!r} is refused: the target would read statements "
                    "differently from airlock (only ASCII-safe client encodings, and "
                    "standard_conforming_strings on)")
    return None


BARRIER_HINT = ("a statement that changes client_encoding or standard_conforming_strings must be followed by "
                "Sync before the next statement: the target reads what follows in the new setting")


class Barriers:
    """When the relay must stop reading until the target has confirmed how it reads text.

    A statement that may change it ("reparse") raises a barrier at its batch: nothing more
    is read from the client until the target's ReadyForQuery for that batch (which comes
    after its ParameterStatus). Such a change inside a transaction block is reverted by
    the block's end, so until a ReadyForQuery outside a block every TCL statement is a
    barrier too. In the extended protocol the barrier waits for the client's Sync; a
    statement parsed before that Sync is refused.
    """

    __slots__ = ("at", "done", "in_batch", "in_block", "_loop")

    def __init__(self, loop) -> None:
        self._loop = loop
        self.at: int | None = None  # the batch whose ReadyForQuery lifts the barrier
        self.done = None  # its future
        self.in_batch = False  # extended protocol: one was parsed or bound before Sync
        self.in_block = False  # one ran since the last ReadyForQuery outside a block

    @property
    def watching(self) -> bool:
        """Whether ReadyForQuery matters to us (the stream calls `ready` only then)."""
        return self.at is not None or self.in_block

    @property
    def expecting(self) -> bool:
        """Whether a statement that may change how text is read is in flight."""
        return self.at is not None or self.in_batch

    def check(self, ops: list[Operation], *, extended: bool, next_batch: int, binding: bool = False) -> bytes | None:
        """Before `ops` go to the target: a refusal, or None (a barrier noted if needed)."""
        refused = divergence(ops)
        if refused is not None:
            return refused
        if self.in_batch and not binding:
            return error_response("42501", f"airlock: {BARRIER_HINT}")
        barrier = reparses(ops) or (self.in_block and any(op.kind == "tcl" for op in ops))
        if barrier:
            self.in_block = True
            if extended:
                self.in_batch = True
            else:
                self.raise_at(next_batch)
        return None

    def raise_at(self, batch: int) -> None:
        self.at = batch
        self.done = self._loop.create_future()

    def synced(self, batch: int) -> None:
        """The client's Sync, the end of `batch`."""
        if self.in_batch:
            self.in_batch = False
            self.raise_at(batch)

    def drop(self) -> None:
        """The statement that raised it was refused: nothing of it runs."""
        self.at = self.done = None

    async def wait(self) -> None:
        await self.done
        self.at = self.done = None

    def ready(self, batch: int, status: bytes) -> None:
        """The target's ReadyForQuery for `batch`."""
        if status == b"I":
            self.in_block = False
        if self.at is not None and batch >= self.at and not self.done.done():
            self.done.set_result(None)
