"""One SSH channel: an exec request or a shell, decided by the gate, relayed to the target.

Exec: the command line is analysed (commands.py), every simple command in it goes to
the gate, and only then is the target asked to run it. Denied: exit status 126 and the
message on stderr. Held: a line on stderr naming the review, then it runs or exits 126.
Exit status, exit signals, stdout, stderr, signals and window changes pass through.

Shell: the gate decides whether a shell may be opened at all (kind `shell`), then typed
lines are checked as they are submitted (lines.py).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncssh

from app.types import Operation, Verdict

from .commands import Analysis, analyse
from .lines import LineTracker, refusal
from .sftp import run_sftp
from .target import TargetError

if TYPE_CHECKING:  # the server hands its connection in: no import back up to it
    from .server import Connection

log = logging.getLogger(__name__)

DENIED = 126  # as a shell says for a command it will not run
UNREACHABLE = 255  # as ssh says when it cannot get there
RECORD_OUTPUT = 64 * 1024  # bytes of an exec's output kept in its recording
CHUNK = 64 * 1024


def operations(connection: str, analysis: Analysis) -> tuple[Operation, list[Operation]]:
    """The whole line (what a review shows and binds to) and one operation per command."""
    opaque = frozenset({"opaque"}) if not analysis.confident else frozenset()
    whole = Operation("ssh", connection, analysis.kind, text=analysis.line, command=analysis.line,
                      targets=tuple(dict.fromkeys(p.program for p in analysis.parts if p.program)),
                      attributes=opaque)
    parts = [Operation("ssh", connection, p.kind, text=analysis.line, command=p.canonical,
                       targets=(p.program,) if p.program else (),
                       attributes=frozenset({"opaque"}) if p.opaque else frozenset())
             for p in analysis.parts]
    return whole, parts


def _env(process: asyncssh.SSHServerProcess, name: str) -> str | None:
    for key, value in (process.env or {}).items():
        key = key.decode(errors="replace") if isinstance(key, bytes) else key
        if key == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def _text(data: bytes | str) -> str:
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


async def handle_process(conn: Connection, process: asyncssh.SSHServerProcess) -> None:
    try:
        refused = await conn.credential_refusal()
        if refused is not None:
            _stderr(process, f"airlock: the credential of this session no longer counts ({refused}); log in again\n")
            process.exit(DENIED)
            return
        run_id = _env(process, "AIRLOCK_RUN")
        if run_id and conn.recording is not None:
            conn.recording.tag_run(run_id)
        if process.subsystem == "sftp":
            await start_sftp(conn, process, run_id)
            return
        if process.subsystem is not None:
            _stderr(process, f"airlock: the {process.subsystem!r} subsystem is not relayed\n")
            process.exit(DENIED)
            return
        if process.command is None:
            await Shell(conn, process, run_id).run()
        else:
            await run_exec(conn, process, _text(process.command), run_id)
    except Exception:
        log.exception("ssh session failed")
        _stderr(process, "airlock: the relay failed on this session; nothing more was run\n")
        process.exit(UNREACHABLE)


def _stderr(process: asyncssh.SSHServerProcess, text: str) -> None:
    try:
        process.stderr.write(text.encode())
    except Exception:  # noqa: BLE001 - the client is gone: nothing to tell
        pass


def _gone_future(conn: Connection, process: asyncssh.SSHServerProcess) -> asyncio.Future:
    """Completes when the client leaves, so a held command is withdrawn, never run."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future = loop.create_future()

    async def watch() -> None:
        await process.channel.wait_closed()
        if not gone.done():
            gone.set_result("the client disconnected")

    task = loop.create_task(watch())
    gone.add_done_callback(lambda _: task.cancel())
    return gone


async def decide_line(conn: Connection, process: asyncssh.SSHServerProcess, line: str, run_id: str | None,
                      notify) -> Verdict:
    whole, parts = operations(conn.connection_name, analyse(line))
    gone = _gone_future(conn, process)
    try:
        return await conn.gate.decide_parts(conn.principal, whole, parts, recording=conn.recording, run_id=run_id,
                                            on_hold=lambda rid, url: notify(
                                                f"airlock: review {rid} needed, waiting for approval: {url}\n"),
                                            gone=gone)
    finally:
        if not gone.done():
            gone.cancel()


async def _target_if_allowed(conn: Connection, process: asyncssh.SSHServerProcess,
                             verdict: Verdict) -> asyncssh.SSHClientConnection | None:
    """The target connection for an allowed channel; None once the client has been told
    why not (refused: 126, the target unreachable: 255) and the channel has exited."""
    if not verdict.allowed:
        _stderr(process, refusal(verdict))
        process.exit(DENIED)
        return None
    conn.grant_seen = True  # allowed, so granted: the grant watcher closes the connection once it goes
    try:
        return await conn.target()
    except TargetError as exc:
        _stderr(process, f"airlock: {exc}\n")
        process.exit(UNREACHABLE)
        return None


async def run_exec(conn: Connection, process: asyncssh.SSHServerProcess, command: str, run_id: str | None) -> None:
    verdict = await decide_line(conn, process, command, run_id, lambda text: _stderr(process, text))
    if verdict.allowed and verdict.status == "approved":
        _stderr(process, f"airlock: approved in review {verdict.review_id}\n")
    target = await _target_if_allowed(conn, process, verdict)
    if target is None:
        return
    pty = process.get_terminal_type() is not None
    remote = await target.create_process(
        command, encoding=None, request_pty="force" if pty else False,
        term_type=process.get_terminal_type(), term_size=process.get_terminal_size() if pty else None)
    recorder = _OutputRecorder(conn)
    await relay_streams(process, remote, recorder, None)
    finish(process, remote)


async def start_sftp(conn: Connection, process: asyncssh.SSHServerProcess, run_id: str | None) -> None:
    op = Operation("ssh", conn.connection_name, "read", text="sftp", command="sftp", attributes=frozenset({"sftp"}))
    verdict = await conn.gate.decide(conn.principal, op, recording=conn.recording, run_id=run_id,
                                     gone=_gone_future(conn, process))
    target = await _target_if_allowed(conn, process, verdict)
    if target is None:
        return
    process.exit(await run_sftp(conn, process, target, run_id))


class _OutputRecorder:
    """Keeps the first RECORD_OUTPUT bytes of an exec's output (bulk copies stay cheap)."""

    def __init__(self, conn: Connection, limit: int | None = RECORD_OUTPUT) -> None:
        self.rec = conn.recording
        self.left = limit

    def output(self, data: bytes) -> None:
        if self.rec is None:
            return
        if self.left is None:
            self.rec.event("output", {"text": _text(data)})
            return
        if self.left > 0:
            self.rec.event("output", {"text": _text(data[: self.left])})
            self.left -= min(len(data), self.left)

    def resize(self, width: int, height: int) -> None:
        if self.rec is not None:
            self.rec.event("resize", {"width": width, "height": height})


async def relay_streams(process: asyncssh.SSHServerProcess, remote: asyncssh.SSHClientProcess,
                        recorder: _OutputRecorder, tracker: LineTracker | None) -> None:
    """Client input to the target (through the line tracker of a shell), target output
    back, until the target's process ends and its output is drained."""

    async def upstream() -> None:
        while True:
            try:
                data = await process.stdin.read(CHUNK)
            except asyncssh.TerminalSizeChanged as exc:
                remote.change_terminal_size(exc.width, exc.height, exc.pixwidth, exc.pixheight)
                recorder.resize(exc.width, exc.height)
                continue
            except asyncssh.SignalReceived as exc:
                remote.send_signal(exc.signal)
                continue
            except asyncssh.BreakReceived as exc:
                remote.send_break(exc.msec)
                continue
            if not data:
                remote.stdin.write_eof()
                return
            if tracker is None:
                remote.stdin.write(data)
            else:
                await tracker.feed(data)
            await remote.stdin.drain()

    async def downstream(source, sink, record: bool) -> None:
        while True:
            data = await source.read(CHUNK)
            if not data:
                return
            sink.write(data)
            if record:
                recorder.output(data)
            await sink.drain()

    up = asyncio.ensure_future(upstream())
    try:
        await asyncio.gather(downstream(remote.stdout, process.stdout, True),
                             downstream(remote.stderr, process.stderr, True))
        await remote.wait_closed()
    finally:
        up.cancel()


def finish(process: asyncssh.SSHServerProcess, remote: asyncssh.SSHClientProcess) -> None:
    if remote.exit_signal is not None:
        signal, core, message, _lang = remote.exit_signal
        process.exit_with_signal(signal, core, message)
    elif remote.exit_status is not None:
        process.exit(remote.exit_status)
    else:
        process.exit(UNREACHABLE)


class Shell:
    """An interactive (or piped) shell on the target, its lines checked as submitted."""

    def __init__(self, conn: Connection, process: asyncssh.SSHServerProcess, run_id: str | None) -> None:
        self.conn, self.process, self.run_id = conn, process, run_id
        self.pty = process.get_terminal_type() is not None

    def say(self, text: str) -> None:
        """A message of airlock's own to the runtime; in a terminal it is part of the
        screen, so the recording keeps it too (the replay shows what the runtime saw)."""
        if not self.pty:
            _stderr(self.process, text)
            return
        shown = text.replace("\n", "\r\n")
        self.process.stdout.write(shown.encode())
        if self.conn.recording is not None:
            self.conn.recording.event("output", {"text": shown})

    async def run(self) -> None:
        conn, process = self.conn, self.process
        op = Operation("ssh", conn.connection_name, "shell", text="(interactive shell)" if self.pty else "(shell)",
                       command="", attributes=frozenset({"pty"}) if self.pty else frozenset())
        verdict = await conn.gate.decide(conn.principal, op, recording=conn.recording, run_id=self.run_id,
                                         on_hold=lambda rid, url: self.say(
                                             f"airlock: review {rid} needed for a shell: {url}\n"),
                                         gone=_gone_future(conn, process))
        target = await _target_if_allowed(conn, process, verdict)
        if target is None:
            return
        size = process.get_terminal_size()
        if self.pty and conn.recording is not None:
            conn.recording.update(meta={"term": process.get_terminal_type(), "width": size[0], "height": size[1]})
        remote = await target.create_process(
            None, encoding=None, request_pty="force" if self.pty else False,
            term_type=process.get_terminal_type(), term_size=size if self.pty else None)
        recorder = _OutputRecorder(conn, None if self.pty else RECORD_OUTPUT)
        tracker = LineTracker(send=remote.stdin.write, decide=self.decide, say=self.say, pty=self.pty,
                              record=self.record_input)
        await relay_streams(process, remote, recorder, tracker)
        finish(process, remote)

    def record_input(self, data: bytes) -> None:
        if self.conn.recording is not None and self.pty:
            self.conn.recording.event("input", {"text": _text(data)})

    async def decide(self, line: str) -> Verdict:
        refused = await self.conn.credential_refusal()
        if refused is not None:  # a JWT past exp, a revoked token: nothing more runs
            return Verdict("deny", rule="airlock-error",
                           message=f"the credential of this session no longer counts ({refused})", status="error")
        return await decide_line(self.conn, self.process, line, self.run_id, self.say)
