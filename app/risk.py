"""How risky a held operation looks to a reviewer, and why, in words (pure).

A display hint for the portal and Slack alike; the decision itself was made by the
policy. It sits below both front doors, so Slack's messages need nothing of the portal.
"""
from __future__ import annotations


def risk(kind: str | None, attributes: list | tuple | None = None, protocol: str = "") -> str:
    """A display hint for reviewers (the decision itself was made by the policy)."""
    attrs = set(attributes or ())
    kind = (kind or "").lower()
    if kind in ("ddl", "dcl", "admin", "shell") or attrs & {"unbounded", "copy_program", "multi_statement"}:
        return "high"
    if kind in ("write", "exec", "tcl") or (protocol == "http" and kind not in ("read", "")):
        return "medium"
    return "low"


_ATTRIBUTE_WHY = {
    "unbounded": "it has no WHERE clause, so it touches every row",
    "copy_program": "COPY ... PROGRAM runs a command on the database server",
    "multi_statement": "several statements were sent as one",
    "method_override": "the request overrides its HTTP method",
    "websocket": "a WebSocket carries whatever its messages say",
}


def risk_why(kind: str | None, attributes: list | tuple | None = None, protocol: str = "") -> list[str]:
    """Why `risk` says what it says, in words: the reviewer should not have to guess."""
    kind = (kind or "").lower()
    out = [_ATTRIBUTE_WHY.get(a, f"it carries the attribute {a}") for a in sorted(set(attributes or ()))]
    if kind in ("ddl", "dcl", "admin"):
        out.insert(0, f"a {kind} statement changes the schema, permissions or server" if protocol != "ssh"
                   else f"kind {kind}")
    elif kind == "shell":
        out.insert(0, "an interactive shell can run anything")
    elif kind in ("write", "exec", "tcl") or (protocol == "http" and kind not in ("read", "")):
        out.insert(0, {"write": "it changes data", "exec": "it runs a command",
                       "tcl": "it controls a transaction"}.get(kind, f"an HTTP {kind} can change data"))
    else:
        out.insert(0, "it only reads")
    return out
