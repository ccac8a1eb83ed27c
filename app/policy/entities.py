"""Validation of service accounts, users, connections, grants and campaigns."""
from __future__ import annotations

import re
from typing import Any

from . import fields as f
from .errors import Issues, Path
from .model import (CONNECTION_TYPES, DEFAULTS, DEFAULT_CAMPAIGN_DURATION, DEFAULT_UNUSED_AFTER, ON_DEADLINE, ROLES,
                    CampaignSpec, ConnectionSpec, GrantSpec, OidcSpec, ServiceAccountSpec, UserSpec)
from .values import (EMAIL_RE, NAME_HINT, NAME_RE, check_pattern, check_secret_refs, did_you_mean, parse_cron,
                     parse_timestamp)

SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-256", "rsa-sha2-512")
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306, "ssh": 22}
COMMON_KEYS = ("name", "type", "owner", "description", "slack_channel", "default")
TYPE_KEYS = {
    "http": (("hosts", "inject", "ca_bundle", "path_case_sensitive"), ("hosts",)),
    "postgres": (("address", "database", "username", "password"), ("address", "username")),
    "mysql": (("address", "database", "username", "password"), ("address", "username")),
    "ssh": (("address", "username", "private_key", "password", "host_key"), ("address", "username", "host_key")),
}
_HOST = re.compile(r"^[A-Za-z0-9*?.\-\[\]]+(?::\d{1,5})?$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-_]+))(?::(?P<port>\d{1,5}))?$")
_URL = re.compile(r"^https?://[^\s/]+(?:/\S*)?$")
# A channel name as Slack allows it (optionally with #), or a channel id.
_SLACK_CHANNEL = re.compile(r"^(?:#?[a-z0-9][a-z0-9_-]{0,79}|[CG][A-Z0-9]{6,20})$")


def check_name(value: str) -> None:
    if not NAME_RE.match(value):
        raise ValueError(NAME_HINT)


def check_email(value: str) -> None:
    if not EMAIL_RE.match(value):
        raise ValueError(f"{value!r} is not an email address")


def check_principal(value: str) -> None:
    """An owner or reviewer: a user's email, or "group:NAME"."""
    if value.startswith("group:"):
        if not value[6:].strip():
            raise ValueError("group: needs a group name")
    elif not EMAIL_RE.match(value):
        raise ValueError(f"must be a user's email or group:NAME, not {value!r}")


def check_public_key(value: str) -> None:
    parts = value.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(f"must be an OpenSSH key 'TYPE BASE64', TYPE one of {', '.join(SSH_KEY_TYPES[:5])}, ...")


def validate_service_account(iss: Issues, value: object, path: Path) -> ServiceAccountSpec | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, ("name", "description", "groups", "oidc", "public_keys"), required=("name",))
    oidc = None
    if "oidc" in d:
        o = f.mapping(iss, d["oidc"], path + ("oidc",))
        if o is not None:
            op = path + ("oidc",)
            f.check_keys(iss, o, op, ("issuer", "subject", "groups_claim"), required=("issuer", "subject"))
            oidc = OidcSpec(issuer=f.string(iss, o, "issuer", op, check=_check_url),
                            subject=f.string(iss, o, "subject", op),
                            groups_claim=f.string(iss, o, "groups_claim", op, default=None))
    return ServiceAccountSpec(
        name=f.string(iss, d, "name", path, check=check_name),
        groups=f.strings(iss, d, "groups", path),
        oidc=oidc,
        public_keys=f.strings(iss, d, "public_keys", path, check=check_public_key, single=False),
        description=f.string(iss, d, "description", path, empty=True),
    )


def _check_url(value: str) -> None:
    if not _URL.match(value):
        raise ValueError(f"must be an http(s) URL, not {value!r}")


def validate_user(iss: Issues, value: object, path: Path) -> UserSpec | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, ("email", "name", "groups", "roles"), required=("email",))
    roles = f.strings(iss, d, "roles", path, check=_check_role)
    return UserSpec(email=f.string(iss, d, "email", path, check=check_email),
                    name=f.string(iss, d, "name", path, empty=True),
                    groups=f.strings(iss, d, "groups", path), roles=roles)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}{did_you_mean(role, ROLES)}; roles are {', '.join(ROLES)}")


def validate_connection(iss: Issues, value: object, path: Path) -> ConnectionSpec | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    kind = f.choice(iss, d, "type", path, CONNECTION_TYPES, default=None)
    if "type" not in d:
        iss.error(path + ("type",), "is required")
    all_type_keys = tuple(dict.fromkeys(k for keys, _ in TYPE_KEYS.values() for k in keys))
    # With an unknown type, accept every type's keys so only the type itself is reported.
    extra, required = TYPE_KEYS.get(kind, (all_type_keys, ()))
    for key in d:
        if key in COMMON_KEYS or key in extra:
            continue
        if key in all_type_keys:
            iss.error(path + (key,), f"is not valid for a {kind} connection")
        else:
            iss.error(path + (key,), f"unknown key{did_you_mean(key, COMMON_KEYS + all_type_keys)}")
    for key in ("name",) + required:
        if key not in d:
            iss.error(path + (key,), "is required" + (f" for a {kind} connection" if key != "name" else ""))
    for key, item in d.items():
        if key not in ("name", "type", "default") and isinstance(item, str):
            try:
                check_secret_refs(item)
            except ValueError as exc:
                iss.error(path + (key,), str(exc))
    headers, query = _inject(iss, d.get("inject"), path + ("inject",)) if "inject" in d else ((), ())
    if kind == "ssh" and "private_key" not in d and "password" not in d:
        iss.error(path, "an ssh connection needs private_key or password")
    host_key = f.string(iss, d, "host_key", path)
    if host_key and "${" not in host_key:
        try:
            check_public_key(host_key)
        except ValueError as exc:
            iss.error(path + ("host_key",), str(exc))
    return ConnectionSpec(
        name=f.string(iss, d, "name", path, check=check_name),
        type=kind or "",
        owner=f.string(iss, d, "owner", path, check=check_principal),
        description=f.string(iss, d, "description", path, empty=True),
        slack_channel=f.string(iss, d, "slack_channel", path, check=check_slack_channel),
        hosts=f.strings(iss, d, "hosts", path, check=_check_host),
        inject_headers=headers,
        inject_query=query,
        ca_bundle=f.string(iss, d, "ca_bundle", path, check=_check_ca_bundle),
        path_case_sensitive=f.boolean(iss, d, "path_case_sensitive", path, False),
        address=_address(iss, d, path, DEFAULT_PORTS.get(kind or "", 0)),
        database=f.string(iss, d, "database", path),
        username=f.string(iss, d, "username", path),
        password=f.string(iss, d, "password", path),
        private_key=f.string(iss, d, "private_key", path),
        host_key=host_key,
        default=f.choice(iss, d, "default", path, DEFAULTS, default=""),
    )


def check_slack_channel(value: str) -> None:
    if not _SLACK_CHANNEL.match(value):
        raise ValueError(f"must be a Slack channel name (#approvals) or id (C0123ABCD), not {value!r}")


def _check_ca_bundle(value: str) -> None:
    # Read by the proxy, possibly on another machine than `airlock apply`: only the form is checked.
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path to a PEM file, not {value!r}")


def _check_host(host: str) -> None:
    if not _HOST.match(host):
        raise ValueError(f"{host!r} is not a host name (glob allowed), optionally with :port")
    check_pattern(host)


def _address(iss: Issues, d: dict[str, Any], path: Path, default_port: int) -> str:
    text = f.string(iss, d, "address", path)
    if not text:
        return ""
    m = _ADDRESS.match(text.strip())
    port = int(m["port"]) if m and m["port"] else default_port
    if not m or not 0 < port < 65536:
        iss.error(path + ("address",), f"must be host:port (IPv6 as [addr]:port), not {text!r}")
        return text
    host = f"[{m['v6']}]" if m["v6"] else m["host"]
    return f"{host}:{port}"  # default port made explicit, so consumers need not know it


def _inject(iss: Issues, value: object, path: Path) -> tuple[tuple[tuple[str, str], ...], ...]:
    d = f.mapping(iss, value, path)
    if d is None:
        return (), ()
    f.check_keys(iss, d, path, ("headers", "query"))
    out = []
    for key in ("headers", "query"):
        pairs = []
        m = f.mapping(iss, d[key], path + (key,)) if key in d else {}
        for name, item in (m or {}).items():
            if key == "headers" and not _HEADER.match(name):
                iss.error(path + (key, name), "is not a valid header name")
            if not isinstance(item, str):
                iss.error(path + (key, name), "must be a string")
                continue
            try:
                check_secret_refs(item)
            except ValueError as exc:
                iss.error(path + (key, name), str(exc))
            pairs.append((name, item))
        out.append(tuple(pairs))
    return out[0], out[1]


def validate_grant(iss: Issues, value: object, path: Path) -> GrantSpec | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, ("service_account", "connection", "expires"),
                 required=("service_account", "connection"))
    expires = None
    if "expires" in d:
        try:
            expires = parse_timestamp(d["expires"])
        except ValueError as exc:
            iss.error(path + ("expires",), str(exc))
    return GrantSpec(service_account=f.string(iss, d, "service_account", path),
                     connection=f.string(iss, d, "connection", path), expires=expires)


CAMPAIGN_KEYS = ("name", "description", "enabled", "scope", "reviewers", "schedule", "duration",
                 "remind_every", "on_deadline", "escalate_to", "unused_after")


def validate_campaign(iss: Issues, value: object, path: Path) -> CampaignSpec | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, CAMPAIGN_KEYS, required=("name", "schedule"))
    scope: dict[str, Any] = {}
    if "scope" in d:
        scope = f.mapping(iss, d["scope"], path + ("scope",)) or {}
        f.check_keys(iss, scope, path + ("scope",), ("connections", "service_accounts"))
    sp = path + ("scope",)
    reviewers = f.string(iss, d, "reviewers", path, default="owner", check=_check_reviewers)
    duration = f.duration(iss, d, "duration", path, DEFAULT_CAMPAIGN_DURATION)
    remind = f.duration(iss, d, "remind_every", path, None)
    if isinstance(remind, int) and isinstance(duration, int) and remind >= duration:
        iss.error(path + ("remind_every",), "must be shorter than duration")
    escalate_to = f.string(iss, d, "escalate_to", path, default=None, check=check_principal)
    raw = d.get("on_deadline")
    if isinstance(raw, str) and raw.startswith("escalate:"):
        # The short form `escalate:GROUP` is `on_deadline: escalate` + `escalate_to: group:GROUP`.
        group = raw.partition(":")[2].removeprefix("group:").strip()
        if not group:
            iss.error(path + ("on_deadline",), "escalate: needs a group name, as in escalate:security")
        elif "escalate_to" in d:
            iss.error(path + ("escalate_to",), "give the group either in on_deadline or in escalate_to, not both")
        on_deadline, escalate_to = "escalate", f"group:{group}"
    else:
        on_deadline = f.choice(iss, d, "on_deadline", path, ON_DEADLINE, default="revoke")
    if "escalate_to" in d and on_deadline != "escalate":
        iss.error(path + ("escalate_to",), "is only valid with on_deadline: escalate")
    return CampaignSpec(
        name=f.string(iss, d, "name", path, check=check_name),
        schedule=f.string(iss, d, "schedule", path, check=parse_cron),  # type: ignore[arg-type]
        connections=f.strings(iss, scope, "connections", sp, check=check_pattern),
        service_accounts=f.strings(iss, scope, "service_accounts", sp, check=check_pattern),
        reviewers=reviewers,
        duration=duration,
        remind_every=remind,
        on_deadline=on_deadline,
        escalate_to=escalate_to,
        unused_after=f.duration(iss, d, "unused_after", path, DEFAULT_UNUSED_AFTER),
        enabled=f.boolean(iss, d, "enabled", path, True),
        description=f.string(iss, d, "description", path, empty=True),
    )


def _check_reviewers(value: str) -> None:
    if value != "owner" and not (value.startswith("group:") and value[6:].strip()):
        raise ValueError(f"must be owner or group:NAME, not {value!r}")
