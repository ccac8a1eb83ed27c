import os
import stat

import pytest
from cryptography.fernet import Fernet

from app import vault
from app.config import settings


@pytest.fixture
def keyless_home(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRLOCK_SECRET_KEY", raising=False)
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path))
    settings.cache_clear()
    yield tmp_path
    settings.cache_clear()


def test_key_file_is_created_private_and_reused(keyless_home):
    key = vault.load_key()
    path = keyless_home / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert vault.load_key() == key
    Fernet(key)  # a valid key


def test_missing_key_without_create_is_a_clear_error(keyless_home):
    with pytest.raises(vault.VaultError, match="airlock init"):
        vault.load_key(create=False)


def test_invalid_configured_key_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRLOCK_SECRET_KEY", "not-a-key")
    settings.cache_clear()
    with pytest.raises(vault.VaultError, match="AIRLOCK_SECRET_KEY"):
        vault.load_key()
    settings.cache_clear()


def test_encrypt_decrypt_round_trip_and_ciphertext_hides_values(sqlite_store):
    token = vault.encrypt({"password": "hunter2-very-secret"})
    assert "hunter2" not in token
    back = vault.decrypt(token)
    assert back["password"].reveal() == "hunter2-very-secret"


def test_decrypt_with_another_key_fails_closed(sqlite_store, monkeypatch):
    token = vault.encrypt({"password": "x"})
    monkeypatch.setenv("AIRLOCK_SECRET_KEY", Fernet.generate_key().decode())
    settings.cache_clear()
    with pytest.raises(vault.VaultError, match="could not be decrypted") as info:
        vault.decrypt(token)


def test_secret_never_shows_in_repr_or_format():
    secret = vault.Secret("s3cr3t-value")
    assert "s3cr3t" not in repr(secret)
    assert "s3cr3t" not in repr({"password": secret})
    assert secret.reveal() == "s3cr3t-value"


def test_env_and_file_references(tmp_path):
    path = tmp_path / "key"
    path.write_text("from-file\n")
    got = vault.resolve("Bearer ${env:TOK} and ${file:%s}" % path, environ={"TOK": "abc"})
    assert got.reveal() == "Bearer abc and from-file"


def test_missing_reference_errors_name_the_reference_not_a_value(tmp_path):
    with pytest.raises(vault.VaultError, match="NOPE is not set"):
        vault.resolve("${env:NOPE}", environ={})
    with pytest.raises(vault.VaultError, match="cannot read secret file"):
        vault.resolve("${file:%s}" % (tmp_path / "missing"))


def test_plain_values_pass_through():
    assert vault.resolve("plain", environ={}).reveal() == "plain"
    assert not vault.has_reference("plain")
    assert vault.has_reference("${env:X}")


def test_secret_is_masked_in_str_and_fstrings():
    secret = vault.Secret("s3cr3t-value")
    assert "s3cr3t" not in str(secret)
    assert "s3cr3t" not in f"password={secret}"
    assert vault.Secret("a") == vault.Secret("a") != vault.Secret("b")
