"""A connection's secrets at apply time: resolve `${env:..}`/`${file:..}` references, or
keep a stored secret whose reference has not changed.

`airlock apply` resolves references in its own environment; the airlock processes only
ever decrypt what it stored. To know whether a reference "has not changed", the config
keeps a keyed digest of each reference's text (`secret_refs`), never the text itself:
the text may hold a literal secret.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Mapping

from app import vault
from app.models import Connection
from app.policy import ConnectionSpec


class UnresolvedSecret(vault.VaultError):
    """A secret reference could not be resolved and no stored secret may stand in for it.

    `path` is the field in the policy file, e.g. ("connections", 1, "password"), so the
    caller can name its line.
    """

    def __init__(self, path: tuple[str | int, ...], reason: str):
        super().__init__(reason)
        self.path = path
        self.reason = reason


SECRET_FIELDS = ("password", "private_key")


def _secret_fields(index: int, spec: ConnectionSpec):
    """(store key, policy-file path, reference text) of each secret-bearing value."""
    for key in SECRET_FIELDS:
        value = getattr(spec, key)
        if value:
            yield key, ("connections", index, key), value
    for prefix, section, pairs in (("header", "headers", spec.inject_headers), ("query", "query", spec.inject_query)):
        for name, value in pairs:
            yield f"{prefix}:{name}", ("connections", index, "inject", section, name), value


def _reference_digest(reference: str) -> str:
    # Keyed, so a literal secret written in the file does not sit in the config as a plain hash.
    return hmac.new(vault.load_key(), b"airlock secret reference v1\0" + reference.encode(), hashlib.sha256).hexdigest()


def connection_secrets(index: int, spec: ConnectionSpec, environ: Mapping[str, str] | None, row: Connection | None,
                       kept: list[str]) -> dict[str, str]:
    """Resolve the references `airlock apply` sees in its own environment (or files).

    One that cannot be resolved here keeps the stored secret when the reference text is
    the one the stored secret came from, so re-applying an unchanged file does not need
    every credential at hand. Otherwise the apply fails, naming the field.
    """
    out: dict[str, str] = {}
    stored_refs = ((row.config or {}).get("secret_refs") or {}) if row is not None else {}
    stored: dict[str, vault.Secret] | None = None
    for key, path, reference in _secret_fields(index, spec):
        try:
            out[key] = vault.resolve(reference, environ=environ).reveal()
            continue
        except vault.VaultError as exc:
            reason = str(exc)
        if row is not None and stored_refs.get(key) == _reference_digest(reference):
            stored = vault.decrypt(row.secrets) if stored is None else stored
            if key in stored:
                out[key] = stored[key].reveal()
                kept.append(f"connection:{spec.name} {_label(key)} ({reason}; the reference is unchanged)")
                continue
        hint = "; the stored secret is kept only while the reference is unchanged" if row is not None else ""
        raise UnresolvedSecret(path, f"{reason}{hint}")
    return out


def _label(key: str) -> str:
    kind, _, name = key.partition(":")
    return {"header": f"inject.headers.{name}", "query": f"inject.query.{name}"}.get(kind, kind)


def secret_refs(spec: ConnectionSpec) -> dict[str, str]:
    """Keyed digests of each secret's reference text, kept in the connection's config."""
    return {key: _reference_digest(reference) for key, _, reference in _secret_fields(0, spec)}
