"""The HTTP bypass corpus (tests/corpus/http/bypasses.yaml), one parametrised test
through the real proxy with raw sockets: every attempt gets the status it should, and
a refused one never reaches the upstream."""
from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.http.rawhttp import send_h2, send_plain, send_tunnel

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "http" / "bypasses.yaml"
CASES = yaml.safe_load(CORPUS.read_text())["cases"]


def _params():
    for case in CASES:
        vias = ("plain", "tunnel") if case.get("via", "both") == "both" else tuple(case["via"].split(","))
        for via in vias:
            yield pytest.param(case, via, id=f"{via}-{case['id']}")


def build_request(case: dict, via: str, host: str, marker: str) -> bytes:
    target = case.get("target", "/corpus")
    if via == "plain" and target.startswith("/"):
        target = f"http://{host}{target}"
    lines = [case.get("raw_line", f"{case.get('method', 'GET')} {{target}} HTTP/1.1").replace("{target}", target)]
    if case.get("host", "{host}") is not None:
        lines.append("Host: " + case.get("host", "{host}").replace("{host}", host))
    lines += ["{auth}", f"X-Case: {marker}", "Connection: close", *case.get("headers", ())]
    body = b""
    if "body" in case:
        body = case["body"].encode("latin-1")
        if case.get("gzip"):
            body = gzip.compress(body)
        lines.append(f"Content-Length: {len(body)}")
    elif "chunks" in case:
        lines.append("Transfer-Encoding: chunked")
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c.encode("latin-1")) for c in case["chunks"])
        body += b"0\r\n" + b"".join(t.encode("latin-1") + b"\r\n" for t in case.get("trailers", ())) + b"\r\n"
    elif "raw_body" in case:
        body = case["raw_body"].encode("latin-1")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def build_h2(case: dict, host: str, marker: str) -> tuple[list[tuple[bytes, bytes]], bytes, list | None]:
    """An HTTP/2 request: no Content-Length is added, so `chunks` is a body of unknown length."""
    head = [(b":method", case.get("method", "GET").encode("latin-1")),
            (b":path", case.get("target", "/corpus").encode("latin-1")), (b":scheme", b"https"),
            (b":authority", host.encode()), (b"x-case", marker.encode())]
    for line in case.get("headers", ()):
        name, _, value = line.partition(":")
        head.append((name.lower().encode("latin-1"), value.strip(" ").encode("latin-1")))
    body = case["body"].encode("latin-1") if "body" in case else "".join(case.get("chunks", ())).encode("latin-1")
    if case.get("gzip"):
        body = gzip.compress(body)
    if "body" in case:
        head.append((b"content-length", str(len(body)).encode()))
    trailers = [tuple(t.encode("latin-1").split(b": ", 1)) for t in case.get("trailers", ())] or None
    return head, body, trailers


def _forwarded(world, via: str, marker: str) -> bool:
    if via == "plain":
        return bool(world.raw.heads_with(marker.encode()))
    with world.upstream.lock:
        return any(r["headers"].get("x-case") == marker for r in world.upstream.seen)


@pytest.mark.parametrize("case,via", list(_params()))
def test_corpus(case, via, proxy, world, agent):
    marker = uuid.uuid4().hex
    if via == "plain":
        host = f"localhost:{world.raw.port}"
        reply = send_plain(proxy.port, agent, build_request(case, via, host, marker))
    elif via == "h2":
        head, body, trailers = build_h2(case, f"localhost:{world.upstream.port}", marker)
        reply = send_h2(proxy.port, proxy.ca, "localhost", world.upstream.port, agent, head, body, trailers)
    else:
        host = f"localhost:{world.upstream.port}"
        reply = send_tunnel(proxy.port, proxy.ca, "localhost", world.upstream.port, agent,
                            build_request(case, via, host, marker))
    expected = case["expect"] if isinstance(case["expect"], list) else [case["expect"]]
    if via == "h2" and 400 in expected:
        expected = [*expected, 0]  # mitmproxy's HTTP/2 layer may reset the stream instead
    assert reply.status in expected, (case, reply, proxy.tail()[-1500:])
    forwarded = case.get("forwarded", expected == [200])
    if forwarded is not None:  # null: either way, as long as the other checks hold
        assert _forwarded(world, via, marker) is forwarded, case
    if "never_path" in case:  # a request smuggled inside this one never reaches an upstream
        assert world.upstream.requests_to(case["never_path"]) == [], case
        assert world.raw.heads_with(b" " + case["never_path"].encode()) == [], case
    if via == "plain":
        for text in case.get("upstream_lacks", ()):
            assert all(text.encode("latin-1") not in head for head in world.raw.heads_with(marker.encode())), case
