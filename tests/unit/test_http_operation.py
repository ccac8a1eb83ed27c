"""addons.operation: the HTTP request -> Operation translation (pure code)."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, strategies as st

from addons.operation import (BadRequest, Request, build, effective_method, fingerprint, normalise_path,
                              parse_json_body, route_keys, shown_url)


@pytest.mark.parametrize("raw,expected", [
    ("/a/b", "/a/b"), ("", "/"), ("admin", "/admin"), ("/a/b/", "/a/b/"), ("*", "*"),
    ("/a/../admin", "/admin"), ("/..", "/"), ("/../../x", "/x"), ("/x/./y/.", "/x/y/"), ("/x/..", "/"),
    ("//admin//x", "/admin/x"), ("/a\\..\\admin", "/admin"),
    ("/%61dmin", "/admin"), ("/%2561dmin", "/admin"), ("/a/%2e%2e/admin", "/admin"),
    ("/a/%252e%252e/admin", "/admin"), ("/admin%2Fusers", "/admin/users"), ("/caf%C3%A9", "/café"),
    ("/admin;jsessionid=1/users", "/admin/users"), ("/public/..;/admin", "/admin"), ("/a;b", "/a"),
])
def test_paths_normalise_as_servers_resolve_them(raw, expected):
    assert normalise_path(raw) == expected


@pytest.mark.parametrize("raw", ["/%00", "/a%0d%0aX: y", "/%ff", "/%C0%AE", "/%252525252e%252525252e/admin"])
def test_paths_that_cannot_be_read_unambiguously_are_refused(raw):
    with pytest.raises(BadRequest):
        normalise_path(raw)


_SEGMENT = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters="%;\\"),
                   min_size=1, max_size=8)


@given(segments=st.lists(_SEGMENT, min_size=1, max_size=6), data=st.data())
def test_percent_encoding_never_changes_what_the_policy_sees(segments, data):
    path = "/" + "/".join(segments)
    encoded = "".join(
        quote(c, safe="") if data.draw(st.booleans()) and c != "/" else c for c in path
    )
    twice = encoded.replace("%", "%25") if data.draw(st.booleans()) else encoded
    assert normalise_path(twice) == normalise_path(path)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30))
def test_normalised_paths_are_stable(raw):
    try:
        once = normalise_path(raw)
    except BadRequest:
        return
    assert normalise_path(once) == once
    assert "/../" not in once and "/./" not in once and "//" not in once


def test_method_overrides():
    assert effective_method("post", ()) == "POST"
    assert effective_method("POST", ("delete",)) == "DELETE"
    assert effective_method("POST", ("PUT", "put ")) == "PUT"
    with pytest.raises(BadRequest):
        effective_method("POST", ("PUT", "DELETE"))
    with pytest.raises(BadRequest):
        effective_method("POST", ("DEL ETE",))


def test_the_kind_is_the_more_dangerous_of_the_real_and_the_named_method():
    def op(method, override=(), websocket=False):
        return build(Request(method, "https", "api.example.com", 443, "/x", override=override,
                             websocket=websocket), "api")

    assert op("GET").kind == "read" and op("HEAD").kind == "read"
    assert op("POST").kind == "write"
    assert op("POST", ("GET",)).kind == "write" and op("POST", ("GET",)).method == "GET"
    assert op("GET", ("DELETE",)).kind == "write" and op("GET", ("DELETE",)).method == "DELETE"
    assert "method_override" in op("GET", ("DELETE",)).attributes
    ws = op("GET", websocket=True)
    assert ws.kind == "write" and "websocket" in ws.attributes


def test_operation_fields():
    o = build(Request("GET", "https", "API.Example.COM.", 443, "/v1/%61ccounts/../users?limit=5&token=abc"), "api")
    assert o.protocol == "http" and o.connection == "api"
    assert o.host == "api.example.com" and o.path == "/v1/users" and o.targets == ("/v1/users",)
    assert o.text == "GET https://api.example.com/v1/users?limit=5&token=[redacted]"
    other_port = build(Request("GET", "https", "api.example.com", 8443, "/"), "api")
    assert other_port.text == "GET https://api.example.com:8443/"


def test_fingerprints_are_the_shape_and_tell_shapes_apart():
    # The fingerprint is the shape a window approval covers (docs/security.md): query
    # values and the body are not part of it; approve-once binds to those (app/binding.py).
    base = fingerprint("POST", "h", 443, "/x", "a=1", {"b": 1, "a": [1, 2]})
    assert base == fingerprint("POST", "h", 443, "/x", "a=1", {"a": [1, 2], "b": 1})
    assert base == fingerprint("POST", "h", 443, "/x", "a=2", {"b": 2})
    for other in (("PUT", "h", 443, "/x", "a=1", {"b": 1, "a": [1, 2]}),
                  ("POST", "h2", 443, "/x", "a=1", {"b": 1, "a": [1, 2]}),
                  ("POST", "h", 444, "/x", "a=1", {"b": 1, "a": [1, 2]}),
                  ("POST", "h", 443, "/y", "a=1", {"b": 1, "a": [1, 2]}),
                  ("POST", "h", 443, "/x", "b=1", {"b": 1, "a": [1, 2]}),
                  ("POST", "h", 443, "/x", "a=1&a=2", {"b": 1, "a": [1, 2]}),
                  ("POST", "h", 443, "/x", "", {"b": 1, "a": [1, 2]})):
        assert fingerprint(*other) != base
    a = build(Request("GET", "https", "h", 443, "/x/../y"), "c")
    b = build(Request("GET", "https", "H", 443, "/%79"), "c")
    assert a.fingerprint == b.fingerprint


def test_route_keys_need_a_port_for_anything_but_https_on_443():
    assert route_keys("https", "API.example.com.", 443) == ("api.example.com:443", "api.example.com")
    assert route_keys("http", "api.example.com", 80) == ("api.example.com:80",)
    assert route_keys("https", "api.example.com", 8443) == ("api.example.com:8443",)


def test_json_bodies_that_parsers_disagree_on_are_refused():
    assert parse_json_body(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    for bad in (b'{"a": 1, "a": 2}', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1', b"\xff"):
        with pytest.raises(BadRequest):
            parse_json_body(bad)


def test_shown_urls_redact_secret_looking_query_values():
    assert shown_url("https", "h", 443, "/x?api_key=abc&page=2") == "https://h/x?api_key=[redacted]&page=2"
    assert shown_url("http", "h", 8080, "/x") == "http://h:8080/x"
