"""SFTP through the gate: the relay reads every SFTP packet the runtime sends, as the
target's sftp-server reads it (version 3, OpenSSH's extensions), and passes it on only
once the gate allows its path.

Each file operation is an `Operation(kind=read|write, path=..., attributes={"sftp"})`,
so rules say `match: {protocol: ssh, attributes: [sftp]}` (all of SFTP) or
`match: {protocol: ssh, path: "/etc/*", kind: [write]}`. A refused request is answered
with SSH_FX_PERMISSION_DENIED and the rule's message; the session carries on. Every
file transfer is recorded when its handle closes: path, direction, bytes (never the
content). Requests the relay cannot read, or extensions it does not know, are refused.
Modern `scp` runs over SFTP and is handled here too.
"""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

import asyncssh

from app.types import Operation

from .lines import refusal

MAX_PACKET = 256 * 1024 + 1024  # OpenSSH's sftp-server limit, plus headroom for the header

INIT, VERSION, OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK = range(11, 21)
LINK = 21
STATUS, HANDLE, DATA, EXTENDED = 101, 102, 103, 200
FX_PERMISSION_DENIED, FX_OP_UNSUPPORTED = 3, 8
PF_WRITE, PF_APPEND, PF_CREAT, PF_TRUNC = 0x2, 0x4, 0x8, 0x10

# request type -> (name, kind, how many path strings follow the id)
PATH_REQUESTS = {
    LSTAT: ("lstat", "read", 1), STAT: ("stat", "read", 1), OPENDIR: ("opendir", "read", 1),
    REALPATH: ("realpath", "read", 1), READLINK: ("readlink", "read", 1),
    SETSTAT: ("setstat", "write", 1), REMOVE: ("remove", "write", 1), MKDIR: ("mkdir", "write", 1),
    RMDIR: ("rmdir", "write", 1), RENAME: ("rename", "write", 2), SYMLINK: ("symlink", "write", 2),
    LINK: ("link", "write", 2),
}
HANDLE_REQUESTS = frozenset({CLOSE, READ, WRITE, FSTAT, FSETSTAT, READDIR})
EXTENSIONS = {  # name -> (kind, path strings), or None for one that only names handles
    "posix-rename@openssh.com": ("write", 2), "hardlink@openssh.com": ("write", 2),
    "statvfs@openssh.com": ("read", 1), "lsetstat@openssh.com": ("write", 1),
    "expand-path@openssh.com": ("read", 1),
    "fstatvfs@openssh.com": None, "fsync@openssh.com": None, "limits@openssh.com": None,
    "home-directory": None, "users-groups-by-id@openssh.com": None, "copy-data": None,
}


class Malformed(Exception):
    """A packet the relay cannot read as sftp-server would: the channel ends."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise Malformed("short packet")
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return value

    def string(self) -> bytes:
        n = self.uint32()
        if self.pos + n > len(self.data):
            raise Malformed("short string")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value


def _packet(ptype: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, ptype) + body


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def status(request_id: int, code: int, message: str) -> bytes:
    return _packet(STATUS, struct.pack(">II", request_id, code) + _string(message.encode()) + _string(b"en"))


async def read_packet(stream: asyncssh.SSHReader) -> bytes | None:
    try:
        head = await stream.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise Malformed("truncated packet") from None
        return None
    (length,) = struct.unpack(">I", head)
    if not 1 <= length <= MAX_PACKET:
        raise Malformed(f"packet of {length} bytes")
    try:
        return head + await stream.readexactly(length)
    except asyncio.IncompleteReadError:
        raise Malformed("truncated packet") from None


@dataclass
class _Open:
    path: str
    direction: str  # upload | download | listing
    bytes: int = 0


def _path(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("a path that is not UTF-8") from None


class SFTPRelay:
    """One sftp channel: requests up through the gate, answers down, transfers recorded."""

    def __init__(self, conn, process: asyncssh.SSHServerProcess, remote: asyncssh.SSHClientProcess,
                 run_id: str | None) -> None:
        self.conn, self.process, self.remote, self.run_id = conn, process, remote, run_id
        self.pending: dict[int, tuple[str, _Open | None]] = {}  # request id -> (type, open file)
        self.handles: dict[bytes, _Open] = {}

    async def run(self) -> None:
        down = asyncio.ensure_future(self._downstream())
        try:
            await self._upstream()
        finally:
            self.remote.stdin.write_eof()
            await asyncio.wait({down}, timeout=30)
            down.cancel()

    async def _upstream(self) -> None:
        while True:
            packet = await read_packet(self.process.stdin)
            if packet is None:
                return
            refusal_text = await self._check(packet)
            if refusal_text is None:
                self.remote.stdin.write(packet)
                await self.remote.stdin.drain()
            else:
                self.process.stdout.write(refusal_text)

    async def _check(self, packet: bytes) -> bytes | None:
        """None to forward the packet, or the STATUS answer that refuses it."""
        ptype = packet[4]
        r = _Reader(packet[5:])
        if ptype == INIT:
            return None
        request_id = r.uint32()
        if ptype == OPEN:
            path = _path(r.string())
            pflags = r.uint32()
            writes = bool(pflags & (PF_WRITE | PF_APPEND | PF_CREAT | PF_TRUNC))
            info = _Open(path, "upload" if writes else "download")
            denied = await self._decide("open", "write" if writes else "read", (path,))
            if denied is None:
                self.pending[request_id] = ("open", info)
            return None if denied is None else status(request_id, FX_PERMISSION_DENIED, denied)
        if ptype in PATH_REQUESTS:
            name, kind, count = PATH_REQUESTS[ptype]
            paths = tuple(_path(r.string()) for _ in range(count))
            denied = await self._decide(name, kind, paths)
            if denied is None and ptype == OPENDIR:
                self.pending[request_id] = ("open", _Open(paths[0], "listing"))
            return None if denied is None else status(request_id, FX_PERMISSION_DENIED, denied)
        if ptype in HANDLE_REQUESTS:
            handle = r.string()
            info = self.handles.get(handle)
            if ptype == WRITE and info is not None:
                r.pos += 8
                info.bytes += len(r.string())
            elif ptype == READ and info is not None:
                self.pending[request_id] = ("read", info)
            elif ptype == CLOSE and info is not None:
                self.handles.pop(handle, None)
                self._record(info)
            return None
        if ptype == EXTENDED:
            name = r.string().decode("ascii", errors="replace")
            if name not in EXTENSIONS:
                return status(request_id, FX_OP_UNSUPPORTED, f"airlock: the sftp extension {name} is not relayed")
            spec = EXTENSIONS[name]
            if spec is None:
                return None
            kind, count = spec
            paths = tuple(_path(r.string()) for _ in range(count))
            denied = await self._decide(name.split("@")[0], kind, paths)
            return None if denied is None else status(request_id, FX_PERMISSION_DENIED, denied)
        return status(request_id, FX_OP_UNSUPPORTED, f"airlock: sftp request type {ptype} is not relayed")

    async def _decide(self, name: str, kind: str, paths: tuple[str, ...]) -> str | None:
        """None when allowed, else the refusal message. Two paths (rename): both must pass."""
        conn = self.conn
        for path in paths:
            text = f"sftp {name} {' '.join(paths)}"
            op = Operation("ssh", conn.connection_name, kind, text=text, command=text, path=path, targets=(path,),
                           attributes=frozenset({"sftp"}))
            verdict = await conn.gate.decide(
                conn.principal, op, recording=conn.recording, run_id=self.run_id,
                record_allows=name != "realpath",
                on_hold=lambda rid, url, text=text: self.process.stderr.write(
                    f"airlock: review {rid} needed for {text}: {url}\n".encode()))
            if not verdict.allowed:
                return refusal(verdict).strip()
        return None

    async def _downstream(self) -> None:
        while True:
            try:
                packet = await read_packet(self.remote.stdout)
            except Malformed:
                return
            if packet is None:
                return
            ptype = packet[4]
            if ptype in (HANDLE, DATA, STATUS) and len(packet) >= 9:
                r = _Reader(packet[5:])
                request_id = r.uint32()
                what = self.pending.pop(request_id, None)
                if what is not None:
                    kind, info = what
                    if ptype == HANDLE and kind == "open" and info is not None:
                        self.handles[r.string()] = info
                    elif ptype == DATA and kind == "read" and info is not None:
                        info.bytes += len(r.string())
            self.process.stdout.write(packet)
            await self.process.stdout.drain()

    def _record(self, info: _Open) -> None:
        if self.conn.recording is not None and info.direction != "listing":
            self.conn.recording.event("notice", {"sftp": info.direction, "path": info.path, "bytes": info.bytes})


async def run_sftp(conn, process: asyncssh.SSHServerProcess, target: asyncssh.SSHClientConnection,
                   run_id: str | None) -> int:
    remote = await target.create_process(subsystem="sftp", encoding=None)
    relay = SFTPRelay(conn, process, remote, run_id)
    try:
        await relay.run()
    except Malformed as exc:
        process.stderr.write(f"airlock: sftp session ended: {exc}\n".encode())
        remote.close()
        return 1
    await remote.wait_closed()
    return remote.exit_status or 0
