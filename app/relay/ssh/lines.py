"""Typed input of a shell, tracked up to Enter so each submitted line passes the gate.

Best effort, by design: the relay sees keystrokes, not what the target's line editor
makes of them. Printable characters, Backspace, Ctrl-U, Ctrl-W and Ctrl-C are
followed exactly. Anything that lets the target edit the line where we cannot see it
(Tab completion, arrow keys and other escape sequences, history search, cursor moves)
makes the line *uncertain*: it is then checked as an opaque command, the most
dangerous kind. Inside an editor or a program reading its own input, Enter still
submits "a line" to the gate (see docs/ssh.md for the limits).

Under a PTY a refused line is never submitted: Ctrl-U (erase the line) and an empty
Enter go to the target instead, and the refusal is written to the terminal. Without a
PTY (a script piped into `ssh host`), each line is forwarded only once allowed; a
refused one is dropped and the refusal goes to stderr.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.types import Verdict

ERASE_LINE = b"\x15"  # Ctrl-U: readline, zle, ash and cooked ttys all clear the line
BACKSPACES = (0x7F, 0x08)
TRUSTED_CONTROLS = {0x15, 0x17, 0x03, 0x04}  # Ctrl-U, Ctrl-W, Ctrl-C, Ctrl-D
MAX_LINE = 64 * 1024


@dataclass
class LineBuffer:
    """The line as typed so far (pure: no I/O)."""

    chars: bytearray = field(default_factory=bytearray)
    uncertain: bool = False

    def key(self, b: int) -> None:
        if b in BACKSPACES:
            while self.chars:  # one character: a UTF-8 sequence back to its lead byte
                last = self.chars.pop()
                if (last & 0xC0) != 0x80:
                    break
        elif b in (0x15, 0x03):  # Ctrl-U, Ctrl-C: the line is gone
            self.reset()
        elif b == 0x17:  # Ctrl-W: the word before the cursor
            text = self.chars.rstrip(b" ")
            cut = text.rfind(b" ")
            self.chars = bytearray(text[: cut + 1])
        elif b >= 0x20:
            self.chars.append(b)
            if len(self.chars) > MAX_LINE:
                self.uncertain = True
        elif b != 0x04:
            self.uncertain = True  # Tab, Esc sequences, Ctrl-R, Ctrl-A/E, ...: edited out of sight

    def text(self) -> str:
        return self.chars.decode("utf-8", errors="replace")

    def reset(self) -> None:
        self.chars = bytearray()
        self.uncertain = False


Decide = Callable[[str], Awaitable[Verdict]]


class LineTracker:
    def __init__(self, *, send: Callable[[bytes], None], decide: Decide, say: Callable[[str], None], pty: bool,
                 record: Callable[[bytes], None]) -> None:
        self.send, self.decide, self.say, self.pty, self.record = send, decide, say, pty, record
        self.buffer = LineBuffer()

    async def feed(self, data: bytes) -> None:
        self.record(data)
        if not self.pty:
            await self._feed_lines(data)
            return
        start = 0
        for i, b in enumerate(data):
            if b not in (0x0D, 0x0A):
                self.buffer.key(b)
                continue
            if i > start:
                self.send(data[start:i])
            await self._submit(bytes([b]))
            start = i + 1
        if start < len(data):
            self.send(data[start:])

    async def _submit(self, enter: bytes) -> None:
        line, uncertain = self.buffer.text(), self.buffer.uncertain
        self.buffer.reset()
        if not line.strip() and not uncertain:
            self.send(enter)
            return
        # An uncertain line: the NUL makes the parser give up, so it counts as opaque.
        verdict = await self.decide(line + ("\x00" if uncertain else ""))
        if verdict.allowed:
            self.send(enter)
            return
        self.send(ERASE_LINE + enter)
        self.say("\n" + refusal(verdict))

    async def _feed_lines(self, data: bytes) -> None:
        pending = bytes(self.buffer.chars) + data
        *lines, rest = pending.split(b"\n")
        self.buffer.chars = bytearray(rest)
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                self.send(raw + b"\n")
                continue
            verdict = await self.decide(line)
            if verdict.allowed:
                self.send(raw + b"\n")
            else:
                self.say(refusal(verdict))


def refusal(verdict: Verdict) -> str:
    """What the runtime reads when its command does not run."""
    if verdict.status == "pending":
        return (f"airlock: review {verdict.review_id} is still pending: {verdict.review_url}\n"
                f"airlock: run the same command again once it is approved\n")
    if verdict.review_id is not None:
        return f"airlock: {verdict.message or 'refused'} ({verdict.review_url or ''})\n"
    rule = f" by rule {verdict.rule}" if verdict.rule else ""
    return f"airlock: denied{rule}: {verdict.message}\n"
