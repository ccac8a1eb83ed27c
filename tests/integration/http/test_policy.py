"""Egress allow-list, deny rules on method/host/path/body, and every spelling of a denied
request we could think of: each is refused and none reaches the upstream."""
from __future__ import annotations

import gzip
import json
import socket
import threading
import uuid

import pytest

from tests.integration.http.clients import basic, connect, raw_request, tunnel_tls


def _unique() -> str:
    return uuid.uuid4().hex[:10]


def test_an_allow_listed_host_is_served(proxy, world, agent, api):
    path = f"/echo/allowed-{_unique()}"
    with proxy.requests(agent) as s:
        r = s.get(f"{api}{path}?q=1")
    assert r.status_code == 200
    assert r.json()["path"] == path and r.json()["query"] == "q=1"


@pytest.mark.parametrize("url", [
    "https://127.0.0.1:{plain}/echo/undeclared",      # the plain upstream, by a name no connection declares
    "https://localhost/echo/default-port",            # no connection declares localhost:443
    "https://example.invalid/echo/nowhere",
])
def test_a_host_in_no_granted_connection_is_denied(proxy, world, agent, url):
    url = url.format(plain=world.plain.port)
    with proxy.requests(agent) as s:
        r = s.get(url)
    assert r.status_code == 403
    assert r.json() == {"error": "denied", "rule": "no-grant", "message": r.json()["message"]}
    assert "no grant" in r.json()["message"]


def test_an_account_without_a_grant_is_denied(proxy, world, api):
    path = f"/echo/intruder-{_unique()}"
    with proxy.requests(world.tokens["intruder"], user="intruder") as s:
        r = s.get(f"{api}{path}")
    assert r.status_code == 403 and r.json()["rule"] == "no-grant"
    assert world.upstream.requests_to(path) == []


def test_plain_http_to_a_declared_port_works_and_its_credential_stays_out(proxy, world, agent):
    path = f"/echo/plain-{_unique()}"
    r = world_get_plain(proxy, world, agent, path)
    assert r.status_code == 200
    assert "authorization" not in r.json()["headers"]  # the plain connection injects nothing


def world_get_plain(proxy, world, agent, path):
    import requests

    return requests.get(f"http://localhost:{world.plain.port}{path}", proxies={"http": proxy.url("agent", agent)},
                        timeout=30)


def test_a_deny_rule_names_itself(proxy, world, agent, api):
    with proxy.httpx(agent) as c:
        r = c.get(f"{api}/admin/users")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "denied", "rule": "no-admin", "message": "the admin API is off limits"}


def test_denied_methods_and_method_overrides(proxy, world, agent, api):
    path = f"/echo/item-{_unique()}"
    with proxy.httpx(agent) as c:
        assert c.delete(f"{api}{path}").json()["rule"] == "no-delete"
        for header in ("X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method"):
            r = c.post(f"{api}{path}", headers={header: "delete"}, content=b"x")
            assert r.status_code == 403 and r.json()["rule"] == "no-delete", header
        conflicting = c.post(f"{api}{path}", headers={"X-HTTP-Method-Override": "PUT", "X-Method-Override": "DELETE"})
        assert conflicting.status_code == 400
        assert c.post(f"{api}{path}", headers={"X-HTTP-Method-Override": "PATCH"}, content=b"x").status_code == 200
    seen = world.upstream.requests_to(path)
    assert [r["method"] for r in seen] == ["POST"]  # only the PATCH-override one got through


def test_json_body_rules(proxy, world, agent, api):
    path = f"/echo/jobs-{_unique()}"
    with proxy.httpx(agent) as c:
        assert c.post(f"{api}{path}", json={"action": "read"}).status_code == 200
        denied = c.post(f"{api}{path}", json={"action": "drop everything"})
        assert denied.status_code == 403 and denied.json()["rule"] == "no-drop"
        # The same body compressed, or sent chunked (no Content-Length), is read all the same.
        zipped = c.post(f"{api}{path}", content=gzip.compress(b'{"action": "drop it"}'),
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert zipped.status_code == 403 and zipped.json()["rule"] == "no-drop"
        chunked = c.post(f"{api}{path}", content=iter([b'{"act', b'ion": "drop', b' now"}']),
                         headers={"Content-Type": "application/json; charset=utf-8"})
        assert chunked.status_code == 403 and chunked.json()["rule"] == "no-drop"
        # What parsers disagree on is refused rather than guessed.
        dup = c.post(f"{api}{path}", content=b'{"action": "drop", "action": "read"}',
                     headers={"Content-Type": "application/json"})
        assert dup.status_code == 400 and "repeats" in dup.json()["message"]
        broken = c.post(f"{api}{path}", content=b'{"action": "drop"', headers={"Content-Type": "application/json"})
        assert broken.status_code == 400
    bodies = [json.loads(r["body"]) for r in world.upstream.requests_to(path)]
    assert bodies == [{"action": "read"}]


def test_a_large_chunked_json_body_is_read_whole_before_anything_goes_upstream(proxy, world, agent, api):
    """A body that grows past the streaming limit mid-way must not start streaming upstream
    before it was decided (mitmproxy's own stream_large_bodies would do exactly that)."""
    path = f"/echo/big-body-{_unique()}"
    padding = json.dumps({"action": "drop all", "padding": "x" * 3_000_000}).encode()
    pieces = [padding[i:i + 65536] for i in range(0, len(padding), 65536)]
    with proxy.httpx(agent) as c:
        r = c.post(f"{api}{path}", content=iter(pieces), headers={"Content-Type": "application/json"})
    assert r.status_code == 403 and r.json()["rule"] == "no-drop"
    assert world.upstream.requests_to(path) == []


BYPASSES = [
    "/ADMIN/../admin/users", "/./admin/users", "/x/../admin/users", "//admin//users", "/%61dmin/users",
    "/%2561dmin/users", "/admin%2fusers", "/admin;jsessionid=1/users", "/public/..;/admin/users",
    "/x/%2e%2e/admin/users", "/x/%252e%252e/admin/users", "/x/%25252e%25252e/admin", "/admin/", "/admin",
    "/x/.%2e/admin", "/admin?debug=1", "/admin#frag",
]


@pytest.mark.parametrize("target", BYPASSES)
def test_path_normalisation_bypass_attempts_are_denied(proxy, world, agent, api, target):
    out = proxy.curl(agent, "--path-as-is", f"{api}{target}")
    assert out.stdout.endswith("403"), out
    body = json.loads(out.stdout.rsplit("\n", 1)[0])
    assert body["rule"] == "no-admin"
    assert not any("admin" in r["path"].lower() for r in world.upstream.requests_to("/"))


@pytest.mark.parametrize("target,status", [
    ("/x\\..\\admin", 403), ("/admin%00.json", 400), ("/%ff/admin", 400), ("/x/%252525252e%252525252e/admin", 400),
])
def test_raw_request_targets_curl_will_not_send(proxy, world, agent, target, status):
    port = world.upstream.port
    with tunnel_tls(proxy.port, proxy.ca, "localhost", port, basic("agent", agent)) as tls:
        reply = raw_request(tls, f"GET {target} HTTP/1.1", {"Host": f"localhost:{port}"})
    assert reply.status == status, reply
    assert not any("admin" in r["path"].lower() for r in world.upstream.requests_to("/"))


def test_host_case_and_trailing_dot_route_to_the_same_connection(proxy, world, agent):
    path = f"/echo/case-{_unique()}"
    port = world.upstream.port
    with tunnel_tls(proxy.port, proxy.ca, "LOCALHOST", port, basic("agent", agent), sni="localhost") as tls:
        ok = raw_request(tls, f"GET {path} HTTP/1.1", {"Host": f"LocalHost:{port}"})
        admin = raw_request(tls, "GET /admin HTTP/1.1", {"Host": f"localhost.:{port}"})
    assert ok.status == 200
    assert admin.status == 403 and admin.json()["rule"] == "no-admin"


def test_a_host_header_or_server_name_naming_another_host_is_refused(proxy, world, agent):
    """Domain fronting: the bytes go to the CONNECT host, so nothing may claim another."""
    port = world.upstream.port
    path = f"/echo/front-{_unique()}"
    auth = basic("agent", agent)
    with tunnel_tls(proxy.port, proxy.ca, "localhost", port, auth) as tls:
        other_host = raw_request(tls, f"GET {path} HTTP/1.1", {"Host": "internal.example:443"})
    with tunnel_tls(proxy.port, proxy.ca, "localhost", port, auth) as tls:
        absolute = raw_request(tls, f"GET https://internal.example{path} HTTP/1.1", {"Host": f"localhost:{port}"})
    with tunnel_tls(proxy.port, proxy.ca, "localhost", port, auth) as tls:
        two_hosts = raw_request(tls, f"GET {path} HTTP/1.1", {"Host": f"localhost:{port}", "host": "internal.example"})
    with tunnel_tls(proxy.port, proxy.ca, "localhost", port, auth, sni="internal.example") as tls:
        sni = raw_request(tls, f"GET {path} HTTP/1.1", {"Host": f"localhost:{port}"})
    for reply in (other_host, absolute, two_hosts, sni):
        assert reply.status == 400, reply
    assert world.upstream.requests_to(path) == []


def test_upstream_tls_is_verified_and_a_ca_bundle_counts_for_its_connection_only(proxy, world, agent):
    path = f"/echo/untrusted-{_unique()}"
    with proxy.requests(agent) as s:
        # The same server by address belongs to "untrusted", which names no ca_bundle.
        r = s.get(f"https://127.0.0.1:{world.upstream.port}{path}")
        assert r.status_code == 502
        assert s.get(f"https://localhost:{world.upstream.port}{path}").status_code == 200
    assert len(world.upstream.requests_to(path)) == 1


def test_raw_tcp_inside_a_tunnel_goes_nowhere(proxy, agent):
    """Only HTTP is proxied: bytes that are not HTTP never open an upstream connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(3)
    accepted: list[bytes] = []

    def accept():
        try:
            conn, _ = listener.accept()
            accepted.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    sock, reply = connect(proxy.port, "127.0.0.1", listener.getsockname()[1], basic("agent", agent))
    assert reply.status == 200
    sock.sendall(b"SSH-2.0-OpenSSH_9.0\r\n")
    sock.settimeout(5)
    try:
        data = sock.recv(4096)
    except (socket.timeout, ConnectionError):
        data = b""
    finally:
        sock.close()
    thread.join()
    listener.close()
    assert not data.startswith(b"SSH-")
    assert accepted == []
