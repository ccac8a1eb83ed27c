"""What an approval covers (pure, no I/O).

Two different things, never to be confused:
- the **binding**: a digest of exactly what will run. "Approve once" and joining a
  pending review match on it: SQL text and the bound parameters' bytes; HTTP method,
  full URL and the digest of the whole body as sent; an SSH command line.
- the **shape**: equal for operations that differ only in their values (the adapter's
  `Operation.fingerprint`). Only a window approval ("this shape for this identity for
  N minutes") matches on it, and approvers are shown `shape_text` before they choose it.

Every digest is SHA-256 over length-prefixed parts, so no two different operations
can be spelled into the same sequence of bytes.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence
from urllib.parse import parse_qsl

from app.types import Operation

_LIST = re.compile(r"\((\$\d+)(?:\s*,\s*\$\d+)+\)")


def digest(*parts: bytes | str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(b"\xff\xff\xff\xff")  # distinct from every length, so None != b""
            continue
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


def sql_binding(op: Operation, params: Sequence[bytes | memoryview | None] = (),
                formats: Iterable[int] = (), types: Iterable[int] = ()) -> str:
    """The exact statement: its full text and every bound parameter as sent (bytes, text
    or binary format, declared type). A parameter that differs by one byte is another
    operation."""
    return digest("sql", op.protocol, op.connection, op.kind, op.text,
                  ",".join(map(str, formats)), ",".join(map(str, types)), str(len(params)),
                  *(None if p is None else bytes(p) for p in params))


def http_binding(op: Operation, *, real_method: str, scheme: str, port: int, target: str,
                 content_type: str, content_encoding: str, body: bytes) -> str:
    """The exact request: the method sent and the one it names, the full URL as sent
    (path and query undecoded), how the body is to be read, and the whole body."""
    return digest("http", op.connection, real_method.upper(), op.method or "", scheme, op.host or "", str(port),
                  target, content_type.strip().lower(), content_encoding.strip().lower(),
                  hashlib.sha256(body).hexdigest(), str(len(body)))


def body_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def binding_of(op: Operation) -> str:
    """The adapter's binding, or one over protocol, kind, text and the shown params (for
    adapters whose text is already the whole operation, e.g. an SSH command line)."""
    if op.binding:
        return op.binding
    return digest("op", op.protocol, op.connection, op.kind, op.text, str(len(op.params)),
                  *op.params)


def shape_text(op: Operation) -> str:
    """What a window approval covers, for people: values replaced by placeholders."""
    if op.protocol == "http":
        return _http_shape(op.text)
    if op.protocol == "postgres":
        try:
            from pglast import parser
            shape = parser.normalize(op.text)
        except Exception:  # noqa: BLE001 - unparseable text has no shape but itself
            return op.text
        # The shape does not count the values of a list: IN (3) and IN (1, 2, 3) match.
        return _LIST.sub(r"(\1, …)", shape)
    return op.text


def _http_shape(text: str) -> str:
    method, _, url = text.partition(" ")
    base, _, query = url.partition("?")
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    shown = "&".join(f"{name}=*" for name in names)
    return f"{method} {base}" + (f"?{shown}" if shown else "") + " (any query values, any body)"


WINDOW_NOTE = {
    "postgres": "Any statement of this shape: every $n stands for any value, and a list of values "
                "matches at any length.",
    "http": "Any request with this method and path: any query values and any body.",
}


def window_note(protocol: str) -> str:
    return WINDOW_NOTE.get(protocol, "Any operation of this shape, whatever its values.")
