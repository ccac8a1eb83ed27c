"""An open HTTPS tunnel authenticated with a JWT ends at `exp` + leeway, even when the IdP
is gone and the keys cached for it are too old to use."""
from __future__ import annotations

import os
import time
import uuid

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import Connection, Grant, ServiceAccount
from app.versions import bump_version
from tests.oidc_issuer import LocalIssuer, decode_unverified

from .conftest import start_proxy, stop_proxy

LEEWAY = 1


@pytest.fixture
def fragile_proxy(world, tmp_path):
    env = {**os.environ, **world.env, "AIRLOCK_OIDC_LEEWAY_SECONDS": str(LEEWAY),
           "AIRLOCK_JWKS_TTL_SECONDS": "1", "AIRLOCK_JWKS_MAX_AGE_SECONDS": "1"}
    p = start_proxy(env, tmp_path / "proxy.log")
    yield p
    stop_proxy(p)


def test_an_open_tunnel_ends_at_exp_while_the_idp_is_down(fragile_proxy, world, api):
    with LocalIssuer() as idp:
        name = f"jwt-{uuid.uuid4().hex[:8]}"
        with session_scope() as s:
            sa = ServiceAccount(name=name, oidc_issuer=idp.issuer, oidc_subject=name)
            s.add(sa)
            s.flush()
            conn = s.scalar(select(Connection).where(Connection.name == "api"))
            s.add(Grant(service_account_id=sa.id, connection_id=conn.id, created_by="test"))
            bump_version(s)
        token = idp.mint({"sub": name}, expires_in=4)
        exp = decode_unverified(token)[1]["exp"]
        path = f"/echo/jwt-{name}"
        with fragile_proxy.httpx(token, user=name) as c:
            assert c.get(f"{api}{path}").status_code == 200
            idp.stop()
            seen: list[tuple[float, int, str]] = []
            while time.time() < exp + LEEWAY + 4:
                r = c.get(f"{api}{path}")  # the same keep-alive tunnel
                seen.append((time.time(), r.status_code, r.text))
                if r.status_code == 407:
                    break
                time.sleep(0.2)
    late = [(t - exp, code) for t, code, _ in seen if code == 200 and t > exp + LEEWAY + 1.2]
    assert not late, late
    assert seen[-1][1] == 407 and "token expired" in seen[-1][2], seen[-3:]
    # Unusable keys make requests before exp refused too (503), never passed unchecked.
    assert {code for _, code, _ in seen} <= {200, 503, 407}
