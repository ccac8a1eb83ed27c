"""The OpenAPI 3.0 description of /api/v1 (served at /api/v1/openapi.json)."""
from __future__ import annotations

from typing import Any

from app.config import settings

ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
TEXT = {"type": "string"}
NTEXT = {"type": "string", "nullable": True}
TIME = {"type": "string", "nullable": True, "description": "ISO 8601, UTC"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": _ref(name)}, "next": NTEXT}}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string", "maxLength": 200}}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or ID}


COMMON = {"401": _error("No or bad API token"), "403": _error("The token's user lacks the role")}
LIMIT = _q("limit", "Page size (1-500, default 50)", {"type": "integer", "minimum": 1, "maximum": 500})
SCHEMAS: dict[str, Any] = {
    "AccessRequest": {"type": "object", "required": ["id", "status", "service_account", "connection"],
                      "properties": {
                          "id": {"type": "integer"},
                          "status": {"type": "string", "enum": ["pending", "approved", "rejected", "expired"]},
                          "service_account": TEXT, "connection": TEXT, "reason": TEXT, "requested_by": TEXT,
                          "duration_seconds": {"type": "integer"}, "created_at": TEXT, "pending_until": TEXT,
                          "decided_by": NTEXT, "access_until": TIME, "review_id": {"type": "integer", "nullable": True},
                          "review_url": NTEXT}},
    "AccessRequestCreate": {"type": "object", "required": ["service_account", "connection", "for", "reason"],
                            "properties": {
                                "service_account": {"type": "string", "maxLength": 200},
                                "connection": {"type": "string", "maxLength": 200},
                                "for": {"type": "string", "maxLength": 20, "description": "e.g. 2h"},
                                "pending_for": {"type": "string", "maxLength": 20,
                                                "description": "how long it waits for approvers (default 24h)"},
                                "reason": {"type": "string", "maxLength": 2000}}},
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": TEXT, "message": TEXT}},
    "Me": {"type": "object", "properties": {"email": TEXT, "name": TEXT,
                                             "roles": {"type": "array", "items": TEXT},
                                             "groups": {"type": "array", "items": TEXT}}},
    "Vote": {"type": "object", "properties": {"approver": TEXT, "decision": {"type": "string", "enum": ["approve", "reject"]},
                                               "reason": TEXT, "window_minutes": {"type": "integer", "nullable": True},
                                               "via": TEXT, "at": TEXT}},
    "Review": {"type": "object", "required": ["id", "status", "service_account", "connection", "operation"],
               "properties": {
                   "id": {"type": "integer"}, "status": {"type": "string", "enum": ["pending", "approved", "rejected", "expired"]},
                   "service_account": TEXT, "run_id": NTEXT, "session_id": NTEXT, "connection": TEXT, "protocol": TEXT,
                   "kind": TEXT, "operation": TEXT, "fingerprint": TEXT, "rule": TEXT, "message": TEXT,
                   "binding": {"type": "string", "description": "digest of exactly what approve-once covers"},
                   "shape": {"type": "string", "description": "what a window approval covers, values as placeholders"},
                   "params": {"type": "array", "nullable": True, "items": NTEXT,
                              "description": "bound parameter values (SQL)"},
                   "body": {"type": "string", "nullable": True, "description": "HTTP body: size, type, SHA-256"},
                   "requester_gone_at": {"type": "string", "description": "when the held runtime left; empty if not"},
                   "risk": {"type": "string", "enum": ["low", "medium", "high"]},
                   "approver_groups": {"type": "array", "items": TEXT}, "required": {"type": "integer"},
                   "approvals": {"type": "integer"}, "votes": {"type": "array", "items": _ref("Vote")},
                   "created_at": TEXT, "expires_at": TEXT, "seconds_left": {"type": "integer"},
                   "decided_at": TEXT, "decided_by": NTEXT, "reason": NTEXT, "url": TEXT,
                   "agent_waiting": {"type": "boolean", "description": "the runtime is still held, waiting"},
                   "hold_until": {"type": "string", "description": "when the held runtime stops waiting; empty if "
                                                                   "nobody waits"},
                   "hold_seconds_left": {"type": "integer"},
                   "justification": {"type": "string", "description": "the agent's own reason (X-Airlock-Reason, "
                                                                      "SET airlock.reason); not verified"},
                   "headers": {"type": "array", "items": {"type": "array", "items": TEXT},
                               "description": "HTTP: the request headers that matter, secrets redacted"},
                   "body_text": {"type": "string", "description": "HTTP: the body as people read it (pretty JSON, "
                                                                   "form fields, or 'binary, N bytes')"},
                   "valid_until": TEXT, "consumed_at": TEXT}},
    "VoteRequest": {"type": "object", "required": ["decision"], "properties": {
        "decision": {"type": "string", "enum": ["approve", "reject"]},
        "reason": {"type": "string", "maxLength": 2000, "description": "Required to reject"},
        "window_minutes": {"type": "integer", "minimum": 1, "maximum": 1440,
                           "description": "Approve every operation of this shape (values as placeholders) "
                                          "for this identity for N minutes"}}},
    "Session": {"type": "object", "required": ["id", "protocol"], "properties": {
        "id": TEXT, "protocol": TEXT, "service_account": TEXT, "connection": TEXT, "run_id": NTEXT,
        "client_addr": TEXT, "started_at": TEXT, "ended_at": TIME, "active": {"type": "boolean"},
        "event_count": {"type": "integer"}, "duration_seconds": {"type": "number", "nullable": True}}},
    "Event": {"type": "object", "properties": {"seq": {"type": "integer"}, "t": {"type": "number"},
                                                "kind": TEXT, "data": {"description": "Recorded JSON (adapter-specific)"}}},
    "AuditEntry": {"type": "object", "required": ["seq", "hash"], "properties": {
        "seq": {"type": "integer"}, "ts": TEXT, "actor": TEXT, "action": TEXT, "target": TEXT,
        "data": {"type": "object"}, "prev_hash": TEXT, "hash": TEXT}},
    "ChainStatus": {"type": "object", "required": ["verified"], "properties": {
        "verified": {"type": "boolean"}, "ok": {"type": "boolean"}, "checked": {"type": "integer"},
        "first_bad_seq": {"type": "integer", "nullable": True}, "reason": TEXT, "verified_by": TEXT,
        "seconds": {"type": "number"}}},
    "Grant": {"type": "object", "required": ["id", "service_account", "connection", "state"], "properties": {
        "id": {"type": "integer"}, "service_account": TEXT, "connection": TEXT, "expires_at": TIME,
        "revoked_at": TIME, "revoked_by": NTEXT, "source": TEXT, "created_by": TEXT, "created_at": TEXT,
        "state": {"type": "string", "enum": ["active", "expired", "revoked"]}, "last_used": TIME}},
    "GrantRequest": {"type": "object", "required": ["service_account", "connection"], "properties": {
        "service_account": {"type": "string", "maxLength": 200}, "connection": {"type": "string", "maxLength": 200},
        "expires_at": {"type": "string", "maxLength": 64, "description": "ISO 8601; omit for a standing grant"}}},
    "ExpireRequest": {"type": "object", "properties": {
        "at": {"type": "string", "maxLength": 64, "description": "ISO 8601; omit to expire now"}}},
}

SESSION_FILTERS = [
    _q("service_account", "Exact service account name"), _q("connection", "Exact connection name"),
    _q("protocol", "Protocol", {"type": "string", "enum": ["http", "postgres", "mysql", "ssh"]}),
    _q("run_id", "Agent run id"),
    _q("verdict", "Sessions with at least one such decision; `masked`: at least one answer in which "
       "values were actually masked (a mask rule that found nothing does not count)",
       {"type": "string", "enum": ["denied", "held", "masked", "error"]}),
    _q("since", "Started at or after (ISO date or time)"), _q("until", "Started before (a date includes the day)"),
    LIMIT, _q("cursor", "The `next` value of the previous page"),
]
AUDIT_FILTERS = [
    _q("actor", "Exact actor"), _q("action", "Action, or a prefix such as `review` for review.*"),
    _q("target", "Exact target"), _q("q", "Text anywhere in actor, target or data"),
    _q("since", "At or after (ISO date or time)"), _q("until", "Before"), LIMIT,
    _q("before", "Entries with a smaller seq (the `next` value)", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}),
]


def _op(summary: str, roles: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "description": f"Roles: {roles}.", "responses": {**responses, **COMMON}, **extra}


def _json_body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def spec() -> dict[str, Any]:
    bad = {"400": _error("Invalid parameters")}
    paths = {
        "/me": {"get": _op("The token's user", "any", {"200": _ok(_ref("Me"))})},
        "/reviews": {"get": _op("List reviews, newest first", "admin, approver, auditor",
                                {"200": _ok(_list_of("Review")), **bad},
                                parameters=[_q("status", "Status (default pending)",
                                               {"type": "string", "enum": ["pending", "approved", "rejected", "expired", "all"]}),
                                            LIMIT, _q("before", "Reviews with a smaller id", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1})])},
        "/reviews/{review_id}": {"get": _op("One review", "admin, approver, auditor",
                                            {"200": _ok(_ref("Review")), "404": _error("No such review")},
                                            parameters=[_path("review_id")])},
        "/reviews/{review_id}/vote": {"post": _op(
            "Approve (once: exactly this operation; or this shape for N minutes) or reject with a reason", "admin, approver",
            {"200": _ok(_ref("Review")), **bad, "404": _error("No such review"),
             "409": _error("Vote refused: self-approval, not an approver group member, already decided")},
            parameters=[_path("review_id")], requestBody=_json_body("VoteRequest"))},
        "/sessions": {"get": _op("List recorded sessions, newest first", "admin, approver, auditor",
                                 {"200": _ok(_list_of("Session")), **bad}, parameters=SESSION_FILTERS)},
        "/sessions/{session_id}": {"get": _op(
            "A session with its events (1000 per page)", "admin, approver, auditor",
            {"200": _ok({"allOf": [_ref("Session"), {"type": "object", "properties": {
                "events": {"type": "array", "items": _ref("Event")}, "next": NTEXT,
                "masked_values": {"type": "integer", "description":
                                  "Values actually masked in this page's answers (each output event's `masked`)"}}}]}),
             **bad, "404": _error("No such session")},
            parameters=[_path("session_id", {"type": "string", "maxLength": 36}),
                        _q("after", "Events after this seq", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1})])},
        "/audit": {"get": _op("Search the audit log, newest first", "admin, auditor",
                              {"200": _ok(_list_of("AuditEntry")), **bad}, parameters=AUDIT_FILTERS)},
        "/audit/status": {"get": _op("The last chain verification", "admin, auditor", {"200": _ok(_ref("ChainStatus"))})},
        "/audit/verify": {"post": _op("Verify the whole chain now", "admin, auditor", {"200": _ok(_ref("ChainStatus"))})},
        "/grants": {
            "get": _op("List grants", "admin, auditor", {"200": _ok(_list_of("Grant")), **bad},
                       parameters=[_q("state", "active (default) or all", {"type": "string", "enum": ["active", "all"]})]),
            "post": _op("Grant a service account a connection", "admin",
                        {"201": _ok(_ref("Grant"), "Created"), **bad, "409": _error("Refused (unknown name, already granted)")},
                        requestBody=_json_body("GrantRequest")),
        },
        "/access-requests": {"post": _op(
            "Request just-in-time access for a service account (approvers decide it as a review)",
            "admin, approver, auditor",
            {"201": _ok(_ref("AccessRequest"), "Created"), **bad}, requestBody=_json_body("AccessRequestCreate"))},
        "/access-requests/{request_id}": {"get": _op(
            "One access request", "admin, approver, auditor",
            {"200": _ok(_ref("AccessRequest")), "404": _error("No such access request")},
            parameters=[_path("request_id")])},
        "/grants/{grant_id}/expire": {"post": _op(
            "Make a grant expire now or at a time", "admin",
            {"200": _ok(_ref("Grant")), **bad, "404": _error("No such grant"), "409": _error("Refused")},
            parameters=[_path("grant_id")], requestBody=_json_body("ExpireRequest", required=False))},
        "/grants/{grant_id}/revoke": {"post": _op(
            "Revoke a grant at once", "admin",
            {"200": _ok(_ref("Grant")), "404": _error("No such grant"), "409": _error("Already revoked")},
            parameters=[_path("grant_id")])},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "airlock portal API", "version": "1",
                 "description": "Reviews, sessions, audit and grants. Authenticate with a portal user's API token "
                                "(create it on the Account page): `Authorization: Bearer alu_...`."},
        "servers": [{"url": settings().public_url + "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "alu_..."}}},
    }
