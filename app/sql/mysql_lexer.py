"""The MySQL lexer: tokens as the server sees them (pure).

`#` comments, `-- ` only with whitespace after it, `/*! */` and `/*M! */` executed (their
markers blanked so offsets index both texts), backslash escapes in strings. See
app/sql/mysql.py for why classification starts here rather than in sqlglot.
"""
from __future__ import annotations

import re

LEX = re.compile(r"""
    (?P<ws>\s+) | (?P<vopen>/\*M?!\d{0,6}) | (?P<vclose>\*/(?!\*))
  | (?P<comment>/\*.*?\*/|\#[^\n]*|--(?=[\s\x00-\x1f]|$)[^\n]*) | (?P<open>/\*)
  | (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*") | (?P<qid>`(?:[^`]|``)*`)
  | (?P<var>@@?(?:[\w$.]+|`(?:[^`]|``)*`|'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")?)
  | (?P<word>[\w$]+) | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


class LexError(ValueError):
    pass


class Tok:
    __slots__ = ("kind", "text", "up", "start", "end")

    def __init__(self, kind: str, text: str, start: int, end: int) -> None:
        self.kind, self.text, self.start, self.end = kind, text, start, end
        self.up = text.upper() if kind in ("word", "var") else text


def lex(sql: str) -> tuple[list[Tok], str, bool]:
    """Significant tokens; the text with versioned-comment markers blanked (so offsets
    index both texts); whether there were any."""
    if "\x00" in sql:
        raise LexError("NUL")
    tokens: list[Tok] = []
    clean = list(sql)
    in_versioned = blanked = False
    for m in LEX.finditer(sql):
        kind, text = m.lastgroup or "other", m.group()
        if kind in ("ws", "comment"):
            continue
        if (kind == "vopen" and not in_versioned) or (kind == "vclose" and in_versioned):
            in_versioned, blanked = kind == "vopen", True
            clean[m.start():m.end()] = " " * (m.end() - m.start())
        elif kind in ("vopen", "vclose", "open") or (kind == "other" and text in "'\"`"):
            raise LexError(f"unterminated {text!r} at {m.start()}")
        else:
            tokens.append(Tok(kind, text, m.start(), m.end()))
    if in_versioned:
        raise LexError("unterminated versioned comment")
    return tokens, "".join(clean), blanked


def name(toks: list[Tok], i: int) -> tuple[str, int]:
    """A possibly qualified name starting at toks[i] (`db`.* keeps its star)."""
    parts: list[str] = []
    while i < len(toks) and (toks[i].kind in ("word", "qid") or (parts and toks[i].text == "*")):
        parts.append(toks[i].text.strip("`").replace("``", "`"))
        i += 1
        if i + 1 < len(toks) and toks[i].text == "." and parts[-1] != "*":
            i += 1
        else:
            break
    return ".".join(parts), i


def literal(tok: Tok) -> str:
    """The value of a string token, MySQL escapes applied."""
    if tok.kind != "str":
        return tok.text
    quote = tok.text[0]
    return re.sub(r"\\(.)|" + quote * 2, lambda m: quote if m.group(1) is None
                  else ESCAPES.get(m.group(1), m.group(1)), tok.text[1:-1], flags=re.DOTALL)
