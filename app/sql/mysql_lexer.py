"""The MySQL lexer: tokens as the server sees them (pure).

`#` comments, `-- ` only with whitespace after it, `/*! */` and `/*M! */` executed (their
markers blanked so offsets index both texts), backslash escapes in strings. Two sql_mode
flags change the lexing, as the server reports them for the session (`Mode`):
ANSI_QUOTES makes "x" an identifier, NO_BACKSLASH_ESCAPES makes a backslash an ordinary
character in a string. See app/sql/mysql.py for why classification starts here rather
than in sqlglot.
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple


class Mode(NamedTuple):
    """The session's lexing-relevant sql_mode flags."""

    ansi_quotes: bool = False
    no_backslash_escapes: bool = False

    @classmethod
    def of(cls, sql_mode: str) -> Mode:
        flags = {f.strip().upper() for f in sql_mode.split(",")}
        # ANSI is a combination mode that includes ANSI_QUOTES.
        return cls("ANSI_QUOTES" in flags or "ANSI" in flags, "NO_BACKSLASH_ESCAPES" in flags)


DEFAULT = Mode()
ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


@functools.cache
def _pattern(mode: Mode) -> re.Pattern[str]:
    def quoted(q: str) -> str:
        return f"{q}(?:[^{q}]|{q}{q})*{q}" if mode.no_backslash_escapes else f"{q}(?:[^{q}\\\\]|\\\\.|{q}{q})*{q}"

    strings = quoted("'") if mode.ansi_quotes else f"{quoted(chr(39))}|{quoted(chr(34))}"
    qids = "`(?:[^`]|``)*`" + ('|"(?:[^"]|"")*"' if mode.ansi_quotes else "")
    return re.compile(rf"""
        (?P<ws>\s+) | (?P<vopen>/\*M?!\d{{0,6}}) | (?P<vclose>\*/(?!\*))
      | (?P<comment>/\*.*?\*/|\#[^\n]*|--(?=[\s\x00-\x1f]|$)[^\n]*) | (?P<open>/\*)
      | (?P<str>{strings}) | (?P<qid>{qids})
      | (?P<var>@@?(?:[\w$.]+|{qids}|{quoted("'")}|{quoted(chr(34))})?)
      | (?P<word>[\w$]+) | (?P<other>.)
    """, re.VERBOSE | re.DOTALL)


class LexError(ValueError):
    pass


class Tok:
    __slots__ = ("kind", "text", "up", "start", "end")

    def __init__(self, kind: str, text: str, start: int, end: int) -> None:
        self.kind, self.text, self.start, self.end = kind, text, start, end
        self.up = text.upper() if kind in ("word", "var") else text


def lex(sql: str, mode: Mode = DEFAULT) -> tuple[list[Tok], str, bool]:
    """Significant tokens; the text with versioned-comment markers blanked (so offsets
    index both texts) and respelled in the default sql_mode for sqlglot; whether there
    were any versioned comments."""
    if "\x00" in sql:
        raise LexError("NUL")
    tokens: list[Tok] = []
    clean = list(sql)
    in_versioned = blanked = False
    for m in _pattern(mode).finditer(sql):
        kind, text = m.lastgroup or "other", m.group()
        if kind in ("ws", "comment"):
            continue
        if (kind == "vopen" and not in_versioned) or (kind == "vclose" and in_versioned):
            in_versioned, blanked = kind == "vopen", True
            clean[m.start():m.end()] = " " * (m.end() - m.start())
        elif kind in ("vopen", "vclose", "open") or (kind == "other" and text in "'\"`"):
            raise LexError(f"unterminated {text!r} at {m.start()}")
        else:
            _respell(clean, kind, text, m.start(), mode)
            tokens.append(Tok(kind, text, m.start(), m.end()))
    if in_versioned:
        raise LexError("unterminated versioned comment")
    return tokens, "".join(clean), blanked


def _respell(clean: list[str], kind: str, text: str, start: int, mode: Mode) -> None:
    """sqlglot reads the default sql_mode: give it the same token, same length."""
    if kind == "qid" and text[0] == '"':
        if "`" in text:
            raise LexError("a backtick inside an ANSI-quoted identifier")
        clean[start] = clean[start + len(text) - 1] = "`"
    elif kind == "str" and mode.no_backslash_escapes and "\\" in text:
        # The value does not matter to the structure, only where the string ends.
        for i, ch in enumerate(text):
            if ch == "\\":
                clean[start + i] = "/"


def name(toks: list[Tok], i: int) -> tuple[str, int]:
    """A possibly qualified name starting at toks[i] (`db`.* keeps its star)."""
    parts: list[str] = []
    while i < len(toks) and (toks[i].kind in ("word", "qid") or (parts and toks[i].text == "*")):
        text = toks[i].text
        parts.append(text[1:-1].replace(text[0] * 2, text[0]) if toks[i].kind == "qid" else text)
        i += 1
        if i + 1 < len(toks) and toks[i].text == "." and parts[-1] != "*":
            i += 1
        else:
            break
    return ".".join(parts), i


def literal(tok: Tok, mode: Mode = DEFAULT) -> str:
    """The value of a string token, MySQL escapes applied."""
    if tok.kind != "str":
        return tok.text
    quote = tok.text[0]
    if mode.no_backslash_escapes:
        return tok.text[1:-1].replace(quote * 2, quote)
    return re.sub(r"\\(.)|" + quote * 2, lambda m: quote if m.group(1) is None
                  else ESCAPES.get(m.group(1), m.group(1)), tok.text[1:-1], flags=re.DOTALL)
