"""A local fake of Slack's Web API (and of response_url hooks) that records every call.

`WebClient(base_url=fake.api_url)` talks to it over real HTTP (slack-sdk uses urllib, so
nothing can be mocked in-process). It keeps posted messages so chat.update can fail
the way Slack does (message_not_found), and it fails on demand: `fail(method,
status=429, retry_after=1)`, `fail(method, status=500)`, `fail(method, delay=3)` (a
timeout), or `down = True` for a full outage.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class Failure:
    status: int = 500
    error: str | None = None  # with status 200: Slack's `ok: false` answer
    retry_after: int | None = None
    delay: float = 0.0


class FakeSlack:
    def __init__(self, bot_token: str = "xoxb-test", app_token: str = "xapp-test") -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.calls: list[Call] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.failures: dict[str, list[Failure]] = {}
        self.down = False
        self.ws_url: str | None = None
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free port
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def hook_url(self, name: str = "r1") -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

    # -- test controls ----------------------------------------------------------------
    def fail(self, method: str, *, status: int = 500, error: str | None = None, retry_after: int | None = None,
             delay: float = 0.0, times: int = 1) -> None:
        with self._lock:
            self.failures.setdefault(method, []).extend(
                Failure(status, error, retry_after, delay) for _ in range(times))

    def add_user(self, user_id: str, email: str, *, confirmed: bool = True, team_id: str = "T1",
                 deleted: bool = False, is_bot: bool = False) -> None:
        self.users[user_id] = {"id": user_id, "team_id": team_id, "name": user_id.lower(), "deleted": deleted,
                               "is_bot": is_bot, "is_email_confirmed": confirmed,
                               "profile": {"email": email, "real_name": user_id}}

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def channel_id(self, name: str) -> str:
        if name[:1] in ("C", "G", "D"):
            return name
        return "C" + hashlib.sha1(name.encode()).hexdigest()[:8].upper()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"fake Slack never saw {what or predicate}; calls: {[c.method for c in self.calls]}")

    # -- the server -------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        args: dict[str, Any] = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if raw:
            if (req.headers.get("Content-Type") or "").startswith("application/json"):
                args.update(json.loads(raw))
            else:
                args.update({k: v[0] for k, v in parse_qs(raw.decode()).items()})
        if parts.path.startswith("/hooks/"):
            method = "hook"
            args = {"hook": parts.path[len("/hooks/"):], **args}
        else:
            method = parts.path.rpartition("/")[2]
        token = (req.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        with self._lock:
            self.calls.append(Call(method, args, token))
            queue = self.failures.get(method) or []
            failure = queue.pop(0) if queue else None
        if self.down:
            failure = Failure(503, "service_unavailable")
        if failure is not None and failure.delay:
            time.sleep(failure.delay)  # longer than the client's timeout: it gives up first
        if failure is not None and (failure.status != 200 or failure.error):
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            body = {"ok": False, "error": failure.error or ("ratelimited" if failure.status == 429 else "internal_error")}
            return self._send(req, failure.status, body, headers)
        if method == "hook":
            return self._send(req, 200, None)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return self._send(req, 200, {"ok": False, "error": "invalid_auth"})
        self._send(req, 200, self._answer(method, args))

    def _send(self, req: BaseHTTPRequestHandler, status: int, body: dict | None,
              headers: dict[str, str] | None = None) -> None:
        data = b"ok" if body is None else json.dumps(body).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "text/plain" if body is None else "application/json")
            req.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                req.send_header(k, v)
            req.end_headers()
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "chat.postMessage":
            channel = self.channel_id(str(args["channel"]))
            ts = f"{1700000000 + next(self._ts)}.000100"
            with self._lock:
                self.messages[(channel, ts)] = {"text": args.get("text"), "blocks": args.get("blocks") or []}
            return {"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts, "text": args.get("text")}}
        if method == "chat.update":
            key = (str(args.get("channel")), str(args.get("ts")))
            with self._lock:
                if key not in self.messages:
                    return {"ok": False, "error": "message_not_found"}
                self.messages[key] = {"text": args.get("text"), "blocks": args.get("blocks") or []}
            return {"ok": True, "channel": key[0], "ts": key[1]}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{1700000000 + next(self._ts)}.000200"}
        if method == "views.open":
            return {"ok": True, "view": {"id": "V1", **(args.get("view") or {})}}
        if method == "users.info":
            user = self.users.get(str(args.get("user")))
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "users.lookupByEmail":
            email = str(args.get("email", "")).lower()
            user = next((u for u in self.users.values() if u["profile"]["email"].lower() == email), None)
            return {"ok": True, "user": user} if user else {"ok": False, "error": "users_not_found"}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(args.get("users")).split(",")[0]}}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.ws_url} if self.ws_url else {"ok": False, "error": "no_socket"}
        return {"ok": False, "error": "unknown_method"}
