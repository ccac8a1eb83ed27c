"""Response masking: JSON by key and detector, text by detector, after content-decoding;
streamed bodies (gzip, deflate, chunk boundaries inside secrets); fail closed."""
from __future__ import annotations

import json
import re

import pytest

MASKED_PII = {
    "name": "Ann Example",
    "email": "[REDACTED:email]",
    "ssn": "[REDACTED]",
    "note": "reach me at [REDACTED:email]",
    "nested": {"password": "[REDACTED]", "city": "Lisbon"},
}
EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[a-z]{2,}")


def test_json_is_masked_by_key_and_detector_for_every_client(proxy, agent, api):
    with proxy.requests(agent) as s:
        assert s.get(f"{api}/pii").json() == MASKED_PII
    with proxy.httpx(agent) as c:
        assert c.get(f"{api}/pii").json() == MASKED_PII
    out = proxy.curl(agent, f"{api}/pii")  # curl speaks HTTP/2 to the proxy
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200" and json.loads(body) == MASKED_PII


def test_a_compressed_json_body_is_decoded_then_masked(proxy, agent, api):
    with proxy.requests(agent) as s:
        r = s.get(f"{api}/gzip-json", headers={"Accept-Encoding": "gzip"})
    assert r.json() == MASKED_PII
    assert "content-encoding" not in r.headers  # sent back identity-encoded


def test_text_is_masked_by_detector(proxy, agent, api):
    with proxy.httpx(agent) as c:
        assert c.get(f"{api}/text-pii").text == "write to [REDACTED:email] or call"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", ""])
@pytest.mark.parametrize("client", ["requests", "httpx", "curl"])
def test_large_streamed_text_is_masked_across_chunk_boundaries(proxy, agent, api, encoding, client, tmp_path):
    lines = 40000  # ~2 MB decoded, sent chunked in 997-byte pieces: thousands of addresses straddle them
    url = f"{api}/big-text?lines={lines}&chunk=997&encoding={encoding}"
    if client == "requests":
        with proxy.requests(agent) as s:
            r = s.get(url, stream=True)
            body = b"".join(r.iter_content(65536))
            status = r.status_code
    elif client == "httpx":
        with proxy.httpx(agent) as c:
            r = c.get(url)
            body, status = r.content, r.status_code
    else:
        out = tmp_path / "body"
        result = proxy.curl(agent, "--compressed", "-o", str(out), url)
        body, status = out.read_bytes(), int(result.stdout.strip())
    assert status == 200
    assert EMAIL.search(body) is None
    got = body.split(b"\n")
    assert got[-1] == b"" and len(got) == lines + 1
    assert all(line == b"line %06d contact [REDACTED:email] today" % i for i, line in enumerate(got[:-1]))


@pytest.mark.parametrize("encoding", ["gzip", ""])
def test_json_of_unknown_length_under_field_rules_is_held_whole_and_masked(proxy, agent, api, encoding):
    with proxy.httpx(agent) as c:
        r = c.get(f"{api}/big-json?rows=3000&encoding={encoding}")
    assert r.status_code == 200
    rows = r.json()["rows"]
    assert len(rows) == 3000
    assert all(row == dict(MASKED_PII, id=i) for i, row in enumerate(rows))


def test_a_streamed_body_that_cannot_be_decoded_is_refused_not_passed(proxy, agent, api):
    with proxy.requests(agent) as s:
        r = s.get(f"{api}/weird-encoding")
    assert r.status_code == 502
    assert r.json()["error"] == "unmaskable" and "snappy" in r.json()["message"]
    assert b"xxxx" not in r.content


def test_binary_media_is_left_alone(proxy, agent, api):
    with proxy.requests(agent) as s:
        r = s.get(f"{api}/binary")
    assert r.status_code == 200 and r.content == b"\x89PNG\r\n alice@example.com"
