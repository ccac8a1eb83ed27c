"""app.http.operation: the HTTP request -> Operation translation (pure code)."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, strategies as st

from app.http.operation import (BadRequest, Request, build, effective_method, fingerprint, normalise_path,
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


# --- issue 16: overrides, fragments, %u escapes, NFKC ------------------------------------

from addons.inject import scrub_forms  # noqa: E402
from app.http.operation import body_overrides, override_header, query_overrides  # noqa: E402
from addons.streaming import scrub  # noqa: E402


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "x-method-override", "X-HTTP-Method", "X-Original-Method",
                                  "X-Method", "X_HTTP_METHOD_OVERRIDE", "x_original_method", "X-Original-HTTP-Method"])
def test_every_common_override_header_is_known(name):
    assert override_header(name)


@pytest.mark.parametrize("name", ["X-Methods", "Method", "X-HTTP-Methodology", "Access-Control-Request-Method"])
def test_other_headers_are_not_overrides(name):
    assert not override_header(name)


def test_method_named_in_the_query_or_a_form_body():
    assert query_overrides("a=1&_method=DELETE") == ("DELETE",)
    assert query_overrides("%5Fmethod=put&_METHOD=put") == ("put", "put")
    assert query_overrides("method=DELETE&x_method=1") == ()
    assert body_overrides("application/x-www-form-urlencoded", b"_method=patch") == ("patch",)
    multipart = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nxx\r\n"
                 b"--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n")
    assert body_overrides('multipart/form-data; boundary="B"', multipart) == ("DELETE",)
    assert body_overrides("multipart/form-data; boundary=B", multipart.replace(b"_method", b"other")) == ()
    with pytest.raises(BadRequest):
        body_overrides("multipart/form-data", multipart)  # no boundary: cannot be read
    with pytest.raises(BadRequest):
        body_overrides("application/x-www-form-urlencoded", b"_method=%ff")


def test_query_and_header_overrides_must_agree():
    op = build(Request("POST", "https", "h", 443, "/x?_method=DELETE", override=("delete",)), "api")
    assert op.method == "DELETE" and op.kind == "write"
    with pytest.raises(BadRequest):
        build(Request("POST", "https", "h", 443, "/x?_method=DELETE", override=("PUT",)), "api")


@pytest.mark.parametrize("target", ["/admin#x", "/x#/../admin", "/x?a=1#b", "/%u0061dmin", "/%U002E%U002E/admin",
                                    "/%25u0061dmin", "/adm\u00efn"])
def test_fragments_percent_u_and_raw_non_ascii_are_refused(target):
    with pytest.raises(BadRequest):
        build(Request("GET", "https", "h", 443, target), "api")


@pytest.mark.parametrize("raw,expected", [
    ("/%EF%BC%A1%EF%BC%A4%EF%BC%AD%EF%BC%A9%EF%BC%AE", "/ADMIN"),
    ("/public/%EF%BC%8E%EF%BC%8E/admin", "/admin"),
    ("/public%EF%BC%8F..%EF%BC%8Fadmin", "/admin"),
    ("/%E2%84%AA", "/K"),
    ("/caf%C3%A9", "/caf\u00e9"),
])
def test_paths_are_nfkc_normalised_before_they_are_resolved(raw, expected):
    assert normalise_path(raw) == expected


def test_shown_urls_never_raise_on_fragments():
    assert shown_url("https", "h", 443, "/a#b") == "https://h/a#b"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"Authorization: Bearer "])
@pytest.mark.parametrize("suffix", [b"", b"x", b"\r\n"])
def test_every_base64_alignment_of_a_credential_is_scrubbed(prefix, suffix):
    import base64

    value = "Bearer upstream-secret-token-0123456789"
    forms = tuple(sorted(scrub_forms(value), key=len, reverse=True))
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(prefix + value.split()[1].encode() + suffix)
        out = scrub(b"<" + text + b">", forms)
        assert b"[REDACTED:credential]" in out, (prefix, suffix, text)
        assert b"token-0123" not in base64.b64decode(out.split(b"[")[0][1:] + b"===", validate=False)


def test_percent_json_and_hex_forms_are_scrubbed():
    value = "Bearer a/b+c=d\"token"
    forms = tuple(sorted(scrub_forms(value), key=len, reverse=True))
    from urllib.parse import quote, quote_plus
    import json as _json

    token = 'a/b+c=d"token'
    for text in (quote(token, safe=""), quote(token, safe="").lower(), quote_plus(token), _json.dumps(token)[1:-1],
                 token.encode().hex(), token.encode().hex().upper()):
        assert scrub(b"x" + text.encode() + b"y", forms) == b"x[REDACTED:credential]y", text
