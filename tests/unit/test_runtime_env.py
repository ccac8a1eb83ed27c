"""app.runtime_env: the variables `airlock env` prints, and their quoting in every shell."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from app.runtime_env import Granted, build, render

BASE = dict(service_account="etl-agent", token="alk_abc-DEF_123", host="127.0.0.1", proxy_port=8080,
            postgres_port=15432, public_url="http://portal.example.com:8000", ca_path="/srv/air lock/ca.pem")


def _vars(**kw) -> dict[str, str]:
    return dict(build(**{**BASE, **kw}).variables)


def test_every_spelling_of_the_proxy_and_every_ca_variable() -> None:
    v = _vars(granted=[])
    proxy = "http://etl-agent:alk_abc-DEF_123@127.0.0.1:8080"
    assert [v[n] for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")] == [proxy] * 4
    assert v["NO_PROXY"] == v["no_proxy"] == "portal.example.com"
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PGSSLROOTCERT", "CURL_CA_BUNDLE"):
        assert v[name] == "/srv/air lock/ca.pem"


def test_a_dsn_per_granted_postgres_connection_with_unique_names() -> None:
    granted = [Granted("orders-db", "postgres"), Granted("orders_db", "postgres"), Granted("api", "http", ("x.io",)),
               Granted("web", "ssh")]
    v = _vars(granted=granted)
    assert v["AIRLOCK_PG_ORDERS_DB"] == ("postgresql://etl-agent:alk_abc-DEF_123@127.0.0.1:15432/orders-db"
                                        "?sslmode=verify-full&sslrootcert=/srv/air%20lock/ca.pem")
    assert v["AIRLOCK_PG_ORDERS_DB_2"].endswith("/orders_db?sslmode=verify-full&sslrootcert=/srv/air%20lock/ca.pem")
    assert not [n for n in v if n.startswith("AIRLOCK_PG_") and "API" in n or "WEB" in n]


def test_credentials_are_percent_encoded_and_ipv6_is_bracketed() -> None:
    v = _vars(token="a:b@c/d", host="::1", granted=[])
    assert v["HTTPS_PROXY"] == "http://etl-agent:a%3Ab%40c%2Fd@[::1]:8080"


@pytest.mark.parametrize("hosts", [("portal.example.com",), ("portal.example.com:443",), ("api.portal.example.com",),
                                   ("*.example.com",), ("portal.example.*",)])
def test_no_proxy_is_left_out_when_it_would_let_a_connection_bypass_the_proxy(hosts) -> None:
    env = build(**BASE, granted=[Granted("api", "http", hosts)])
    names = [n for n, _ in env.variables]
    assert "NO_PROXY" not in names and "no_proxy" not in names
    assert env.notes and "api" in env.notes[0]


def test_no_proxy_stays_for_unrelated_hosts() -> None:
    assert _vars(granted=[Granted("api", "http", ("example.com", "other.example.org"))])["NO_PROXY"] == \
        "portal.example.com"


TRICKY = "it's $HOME `x` \\ \"q\""


@pytest.mark.parametrize("shell, run", [("sh", ["sh", "-c"]), ("fish", ["fish", "-c"])])
def test_quoting_survives_a_real_shell(shell, run) -> None:
    assert shutil.which(run[0]), f"{run[0]} is needed (.ci/run installs it)"
    env = build(**{**BASE, "ca_path": TRICKY}, granted=[])
    out = subprocess.run([*run, render(env, shell) + '\nprintf %s "$SSL_CERT_FILE"'], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout == TRICKY, out.stderr


def test_powershell_single_quotes_are_doubled() -> None:
    # No PowerShell here: its rule is simple enough to state (only ' is special in '...').
    line = render(build(**{**BASE, "ca_path": TRICKY}, granted=[]), "powershell").splitlines()[-1]
    assert line == "$env:CURL_CA_BUNDLE = 'it''s $HOME `x` \\ \"q\"'"


def test_dotenv_is_name_equals_value_and_line_breaks_are_refused() -> None:
    env = build(**BASE, granted=[])
    lines = render(env, "dotenv").splitlines()
    assert lines[0] == "HTTPS_PROXY=http://etl-agent:alk_abc-DEF_123@127.0.0.1:8080"
    with pytest.raises(ValueError, match="line break"):
        render(build(**{**BASE, "ca_path": "/a\nb"}, granted=[]), "dotenv")
