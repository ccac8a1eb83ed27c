"""HTTP request -> Operation: the one translation the gate sees. Pure code: no mitmproxy, no store.

The policy must see what the upstream will act on, so every way of spelling the same
request the same way matters more here than elegance:
- the method is the one an override names (X-HTTP-Method-Override and kin, `_method` in
  the query or a form body); the kind is the more dangerous of the real and the named
  method, and overrides that disagree are refused;
- the path is decoded until it stops changing (so %252e%252e is ".."), put in NFKC form
  (full-width letters and dots are the ASCII ones to some servers), then `;params`,
  backslashes, duplicate slashes and dot-segments are resolved the way servers do.
  Whether case matters is the policy's call (app/policy/engine.py), not this module's;
- a fragment or an IIS-style `%uXXXX` escape in the request target is refused: servers
  disagree on what they mean;
- the host is lowercased without a trailing dot.
A request we cannot read unambiguously raises BadRequest: refused, never guessed at.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode

from app.redaction import scrub
from app.types import Operation

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Header names frameworks read a method from; compared with "_" as "-", since CGI-style
# servers (PHP, WSGI) fold both to the same HTTP_X_... variable.
OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-method-override", "x-http-method", "x-original-method",
                              "x-method", "x-original-http-method", "x-http-method-name"})
OVERRIDE_PARAM = "_method"  # Rails, Laravel, Symfony, Express method-override: query or form body
MAX_DECODE_ROUNDS = 4
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLASHES = re.compile(r"/{2,}")
_MULTIPART_NAME = re.compile(rb"""[;\s]name\*?\s*=\s*(?:utf-8'')?["']?_method["']?\s*(?:;|$)""", re.I)
_PERCENT_U = re.compile(r"%u[0-9a-f]{4}", re.I)
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json\b|^text/json\b", re.I)


class BadRequest(ValueError):
    """The request cannot be read unambiguously; `message` is safe to show the runtime."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an HTTP request the operation is built from."""

    method: str
    scheme: str
    host: str
    port: int
    path: str  # as sent: path and query, percent-encoded
    override: tuple[str, ...] = ()  # methods named by override headers and a form body's _method
    websocket: bool = False
    body: object | None = None  # parsed JSON body, if any


def is_json(content_type: str | None) -> bool:
    return bool(content_type) and _JSON_TYPE.match(content_type.strip()) is not None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_form(content_type: str | None, method: str) -> bool:
    """A body a framework may read `_method` from: urlencoded, or multipart on a POST
    (the only method Rack, Laravel and Express override from a multipart body)."""
    media = media_type(content_type)
    return media == "application/x-www-form-urlencoded" or (media == "multipart/form-data"
                                                             and method.upper() == "POST")


def json_overrides(body: object) -> tuple[str, ...]:
    """Laravel and Symfony read `_method` from a JSON body's top level too."""
    if not isinstance(body, dict):
        return ()
    named = tuple(v for k, v in body.items() if k.strip().lower() == OVERRIDE_PARAM)
    if any(not isinstance(v, str) for v in named):
        raise BadRequest("_method in the JSON body is not a string")
    return named


def body_overrides(content_type: str | None, data: bytes) -> tuple[str, ...]:
    """Methods named by `_method` in a form body (see is_form)."""
    if media_type(content_type) != "multipart/form-data":
        try:
            return query_overrides(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest("the form body is not valid UTF-8") from None
    boundary = next((v.strip().strip('"') for k, _, v in (p.partition("=") for p in content_type.split(";")[1:])
                     if k.strip().lower() == "boundary"), "")
    if not boundary:
        raise BadRequest("a multipart body needs a boundary")
    if b"method" not in data.lower():
        return ()
    named = []
    for part in data.split(b"--" + boundary.encode("latin-1"))[1:]:
        head, sep, value = part.partition(b"\r\n\r\n")
        disposition = next((line for line in head.split(b"\r\n") if line.lower().startswith(b"content-disposition:")),
                           b"")
        if _MULTIPART_NAME.search(disposition):
            named.append(value.removesuffix(b"\r\n").decode("utf-8", "replace"))
        elif b"_method" in head.lower():
            raise BadRequest("a multipart part header names _method in a way airlock cannot read")
    return tuple(named)


def normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def route_keys(scheme: str, host: str, port: int) -> tuple[str, ...]:
    """Names a connection may declare this destination by, most specific first.

    A host without a port means HTTPS on 443. Anything else, plain HTTP on 80
    included, must be declared with its port: credentials are injected into what goes
    there, and they must not travel in clear text by accident.
    """
    host = normalise_host(host)
    if scheme == "https" and port == 443:
        return f"{host}:443", host
    return (f"{host}:{port}",)


def effective_method(method: str, override: tuple[str, ...]) -> str:
    named = {v.strip().upper() for v in override if v.strip()}
    if not named:
        return method.upper()
    if len(named) > 1:
        raise BadRequest("conflicting method-override headers")
    (value,) = named
    if not _TOKEN.match(value):
        raise BadRequest("invalid method-override header")
    return value


def override_header(name: str) -> bool:
    return name.lower().replace("_", "-") in OVERRIDE_HEADERS


def query_overrides(query: str) -> tuple[str, ...]:
    """Methods named by `_method` in a query string or a form body (any spelling of the key)."""
    if "method" not in query.lower():
        return ()
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the query or form body is not valid UTF-8 once decoded") from None
    return tuple(v for k, v in pairs if k.strip().lower() == OVERRIDE_PARAM)


def normalise_path(raw: str) -> str:
    """The path as a server would resolve it (no query): see the module docstring."""
    if not raw.isascii():
        raise BadRequest("the request target contains raw non-ASCII bytes; percent-encode them")
    path = raw
    for _ in range(MAX_DECODE_ROUNDS):
        if _PERCENT_U.search(path):
            raise BadRequest("%u escapes are not HTTP; servers disagree on what they mean")
        decoded = _decode_once(path)
        if decoded == path:
            break
        path = decoded
    else:
        if _decode_once(path) != path:
            raise BadRequest("the path is percent-encoded too many times")
    if _PERCENT_U.search(path):
        raise BadRequest("%u escapes are not HTTP; servers disagree on what they mean")
    if _CONTROL.search(path):
        raise BadRequest("the path contains control characters")
    if path == "*":
        return path
    if not path.isascii():
        path = unicodedata.normalize("NFKC", path)
        if _CONTROL.search(path):
            raise BadRequest("the path contains control characters")
    path = path.replace("\\", "/")
    # Servlet containers drop ";params" from every segment: /admin;x=1/ is /admin/.
    if ";" in path:
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    path = _SLASHES.sub("/", path)
    return _remove_dot_segments(path if path.startswith("/") else "/" + path)


def _decode_once(path: str) -> str:
    if "%" not in path:
        return path
    try:
        return unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the path is not valid UTF-8 once decoded") from None


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target as sent. A fragment never belongs in one: some
    servers drop it, some keep it in the path, so it is refused."""
    if "#" in target:
        raise BadRequest("a fragment (#) does not belong in a request target")
    if " " in target:  # only an HTTP/2 :path can hold one; an HTTP/1 upstream would split on it
        raise BadRequest("the request target contains a space")
    path, _, query = target.partition("?")
    return path or "/", query


def parse_json_body(data: bytes) -> object:
    """The body as JSON, refusing what parsers disagree on (duplicate keys, NaN)."""

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in items:
            if key in out:
                raise BadRequest(f"the JSON body repeats the key {key!r}")
            out[key] = value
        return out

    def constant(name: str) -> object:
        raise BadRequest(f"the JSON body contains {name}, which is not JSON")

    try:
        return json.loads(data, object_pairs_hook=pairs, parse_constant=constant)
    except BadRequest:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _shown_query(query: str) -> str:
    """The query for people to read: values of secret-looking parameters redacted."""
    params = parse_qsl(query, keep_blank_values=True)
    scrubbed = [(k, scrub({k: v})[k]) for k, v in params]
    if scrubbed == params:
        return scrub(query)
    return urlencode(scrubbed, safe="[]")


def shown_url(scheme: str, host: str, port: int, target: str) -> str:
    """The URL as sent, for recordings: secret-looking query values redacted."""
    path, _, query = target.partition("?")
    port_part = "" if port == default_port(scheme) else f":{port}"
    shown = _shown_query(query) if query else ""
    return f"{scheme}://{normalise_host(host)}{port_part}{path}" + (f"?{shown}" if shown else "")


def fingerprint(method: str, host: str, port: int, path: str, query: str, body: object | None) -> str:
    """The request's shape (window approvals, the verdict cache): method, destination,
    path and the names of the query parameters. Values and the body are left out on
    purpose: approvers are shown a window as covering any of them (app/binding.py), and
    approve-once binds to the exact request instead (`Gatekeeper`)."""
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    canonical = json.dumps([method, host, port, path, names], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def build(req: Request, connection: str) -> Operation:
    if not _TOKEN.match(req.method):
        raise BadRequest("the request method is not a token")
    raw_path, query = split_target(req.path)
    method = effective_method(req.method, req.override + query_overrides(query))
    path = normalise_path(raw_path)
    host = normalise_host(req.host)
    writes = method not in READ_METHODS or req.method.upper() not in READ_METHODS
    attributes = set()
    if method != req.method.upper():
        attributes.add("method_override")
    if req.websocket:
        # A WebSocket carries whatever its messages say: judged as a write, as a whole.
        attributes.add("websocket")
        writes = True
    port = "" if req.port == default_port(req.scheme) else f":{req.port}"
    shown = _shown_query(query) if query else ""
    return Operation(
        protocol="http",
        connection=connection,
        kind="write" if writes else "read",
        text=f"{method} {req.scheme}://{host}{port}{path}" + (f"?{shown}" if shown else ""),
        targets=(path,),
        method=method,
        host=host,
        path=path,
        attributes=frozenset(attributes),
        body=req.body,
        fingerprint=fingerprint(method, host, req.port, path, query, req.body),
    )
