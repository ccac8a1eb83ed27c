"""The review lifecycle on SQLite and PostgreSQL: quorum, rejection, voter checks,
approve-once, fingerprint windows and expiry."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app import approvals, audit, windows
from app.approvals import VoteError
from app.errors import NotFound
from app.db import session_scope
from app.models import AuditEntry, BusEvent, FingerprintApproval, Group, Review, User, Vote, utcnow
from app.types import Operation, Principal, ReviewSpec, Verdict

SA = "etl-agent"
SUBJECT = "spiffe://corp/etl-agent"


@pytest.fixture
def people(store):
    with session_scope() as s:
        dba, sre = Group(name="dba"), Group(name="sre")
        s.add_all([
            User(email="alice@example.com", groups=[dba]),
            User(email="bob@example.com", groups=[dba]),
            User(email="erin@example.com", groups=[dba, sre]),
            User(email="carol@example.com", groups=[sre]),
            User(email="dave@example.com", groups=[dba], active=False),
            User(email="root@example.com", roles=["admin"]),
            # Accounts that share an identity with the requester must never count.
            User(email=SA, groups=[dba]),
            User(email="twin@example.com", groups=[dba], oidc_subject=SUBJECT),
        ])
    return store


def _op(fingerprint: str = "fp-1", connection: str = "orders-db", text: str = "DELETE FROM orders",
        binding: str | None = None) -> Operation:
    # Lifecycle tests name one operation by one string: its shape and its binding alike.
    return Operation(protocol="postgres", connection=connection, kind="write", text=text,
                     targets=("orders",), fingerprint=fingerprint,
                     binding=fingerprint if binding is None else binding)


def _verdict(count: int = 2, groups=("dba",), expires_after: float = 3600.0, rule: str = "writes-need-review") -> Verdict:
    spec = ReviewSpec(groups=tuple(groups), count=count, hold_seconds=5, expires_after_seconds=expires_after,
                      slack=False, channel="#db-approvals")
    return Verdict(action="review", rule=rule, message="writes need a DBA", review=spec)


def _create(count=2, groups=("dba",), fingerprint="fp-1", sa=SA, connection="orders-db", expires_after=3600.0,
            now=None, text="DELETE FROM orders", rule="writes-need-review") -> int:
    with session_scope() as s:
        review = approvals.create_review(
            s, principal=Principal(service_account=sa, subject=SUBJECT if sa == SA else "", via="oidc"),
            operation=_op(fingerprint, connection, text), verdict=_verdict(count, groups, expires_after, rule),
            run_id="run-7", session_id="sess-1", now=now,
        )
        return review.id


def _vote(review_id: int, email: str, decision: str = "approve", **kw) -> Review:
    with session_scope() as s:
        return approvals.vote(s, review_id, voter_email=email, decision=decision, **kw)


def _get(review_id: int) -> Review:
    with session_scope() as s:
        return s.get(Review, review_id)


def _standing(fingerprint="fp-1", sa=SA, connection="orders-db", rule="writes-need-review", now=None,
              binding=None):
    with session_scope() as s:
        return approvals.standing_approval(s, service_account=sa, connection=connection, fingerprint=fingerprint,
                                           binding=fingerprint if binding is None else binding, rule=rule, now=now)


def _actions() -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)))


def _bus(channel: str) -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(BusEvent.payload).where(BusEvent.channel == channel).order_by(BusEvent.id)))


def test_create_review_takes_its_shape_from_the_verdict(people):
    now = utcnow()
    rid = _create(count=2, now=now, text="ALTER ROLE app PASSWORD 'hunter2'")
    r = _get(rid)
    assert (r.status, r.required, r.groups, r.slack, r.channel) == ("pending", 2, ["dba"], False, "#db-approvals")
    assert (r.service_account, r.connection, r.protocol, r.kind, r.fingerprint) == (SA, "orders-db", "postgres",
                                                                                    "write", "fp-1")
    assert (r.rule, r.run_id, r.session_id) == ("writes-need-review", "run-7", "sess-1")
    assert r.expires_at == now + timedelta(hours=1)
    assert r.details["requester"] == {"service_account": SA, "subject": SUBJECT, "via": "oidc"}
    assert "hunter2" not in r.operation and r.operation.startswith("ALTER ROLE app PASSWORD")
    assert _actions() == ["review.create"]
    assert _bus("reviews") == [str(rid)]
    assert approvals.review_url(rid) == f"http://localhost:8000/reviews/{rid}"


def test_quorum_of_two_distinct_approvers(people):
    rid = _create(count=2)
    now = utcnow()
    assert _vote(rid, "alice@example.com", now=now).status == "pending"
    r = _vote(rid, "Bob@Example.com", reason="checked the ticket", now=now)
    assert (r.status, r.decided_by, r.reason) == ("approved", "bob@example.com", "checked the ticket")
    assert r.decided_at == now and r.valid_until == now + timedelta(hours=1)
    assert r.details["expires_after_seconds"] == 3600.0
    assert r.details["approvers"] == ["alice@example.com", "bob@example.com"]
    assert _actions() == ["review.create", "review.vote", "review.vote", "review.approved"]
    assert _bus(f"review:{rid}") == ["pending", "approved"]
    with session_scope() as s:
        assert audit.verify(s).ok


def test_one_rejection_rejects(people):
    rid = _create(count=2)
    _vote(rid, "alice@example.com")
    r = _vote(rid, "bob@example.com", "reject", reason="")
    assert (r.status, r.decided_by, r.reason) == ("rejected", "bob@example.com", "")
    assert _actions()[-1] == "review.rejected"
    with pytest.raises(VoteError, match="already rejected"):
        _vote(rid, "erin@example.com")


@pytest.mark.parametrize("voter", [SA, "ETL-Agent", "twin@example.com"])
def test_self_approval_is_refused(people, voter):
    rid = _create(count=1)
    with pytest.raises(VoteError, match="requester"):
        _vote(rid, voter)
    assert _get(rid).status == "pending"
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 0


@pytest.mark.parametrize("voter,why", [
    ("carol@example.com", "not in an approver group"),
    ("dave@example.com", "not an active"),
    ("nobody@example.com", "not an active"),
])
def test_voters_outside_the_approver_groups_are_refused(people, voter, why):
    rid = _create(count=1)
    with pytest.raises(VoteError, match=why):
        _vote(rid, voter)
    assert _get(rid).status == "pending"


def test_review_without_groups_is_decided_by_admins_only(people):
    rid = _create(count=1, groups=())
    with pytest.raises(VoteError, match="admin"):
        _vote(rid, "alice@example.com")
    assert _vote(rid, "root@example.com").status == "approved"


def test_unknown_review_and_bad_decision_are_refused(people):
    with pytest.raises(approvals.ReviewNotFound, match="does not exist"):
        _vote(4242, "alice@example.com")
    rid = _create()
    with pytest.raises(VoteError, match="unknown decision") as bad:
        _vote(rid, "alice@example.com", "maybe")
    assert not isinstance(bad.value, NotFound)


def test_a_repeated_vote_counts_once(people):
    rid = _create(count=2)
    _vote(rid, "alice@example.com")
    assert _vote(rid, "alice@example.com").status == "pending"
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 1
    assert _actions().count("review.vote") == 1
    with pytest.raises(VoteError, match="already voted approve"):
        _vote(rid, "alice@example.com", "reject")
    # After the decision the same vote again is still just acknowledged.
    assert _vote(rid, "bob@example.com").status == "approved"
    assert _vote(rid, "bob@example.com").status == "approved"
    assert _actions().count("review.approved") == 1


def test_votes_on_expired_reviews_are_refused(people):
    past = utcnow() - timedelta(hours=2)
    rid = _create(count=1, now=past, expires_after=3600)
    with pytest.raises(VoteError, match="expired"):
        _vote(rid, "alice@example.com")
    with session_scope() as s:
        assert approvals.expire_reviews(s) == [rid]
    with pytest.raises(VoteError, match="already expired"):
        _vote(rid, "alice@example.com")


def test_expire_reviews_closes_only_overdue_pending_reviews(people):
    now = utcnow()
    old = _create(count=1, fingerprint="a", now=now - timedelta(minutes=61))
    fresh = _create(count=1, fingerprint="b", now=now - timedelta(minutes=59))
    decided = _create(count=1, fingerprint="c", now=now - timedelta(minutes=61))
    with session_scope() as s:
        s.get(Review, decided).status = "approved"
    with session_scope() as s:
        assert approvals.expire_reviews(s, now=now) == [old]
    with session_scope() as s:
        assert approvals.expire_reviews(s, now=now) == []
    assert [_get(i).status for i in (old, fresh, decided)] == ["expired", "pending", "approved"]
    assert _actions().count("review.expired") == 1
    assert _bus(f"review:{old}") == ["expired"]


def test_approve_once_lets_exactly_one_operation_through(people):
    rid = _create(count=1)
    assert _standing() is None  # pending is not approved
    _vote(rid, "alice@example.com")
    assert _standing(rule="another-rule") is None
    assert _standing(fingerprint="fp-2") is None
    assert _standing() == f"approved once in review {rid}"
    assert _standing() is None
    assert _get(rid).consumed_at is not None
    assert _actions()[-1] == "review.used"


def test_approve_once_is_void_after_valid_until(people):
    rid = _create(count=1, expires_after=600)
    _vote(rid, "alice@example.com")
    assert _standing(now=utcnow() + timedelta(minutes=11)) is None
    assert _standing(now=utcnow() + timedelta(minutes=9)) is not None


def test_racing_sessions_consume_an_approve_once_review_once(people):
    for round_ in range(4):
        rid = _create(count=1, fingerprint=f"race-{round_}")
        _vote(rid, "alice@example.com")
        start = threading.Barrier(4)
        results: list[str | None] = []
        errors: list[BaseException] = []

        def racer() -> None:
            try:
                start.wait()
                results.append(_standing(fingerprint=f"race-{round_}"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=racer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert results.count(None) == 3
        assert [r for r in results if r is not None] == [f"approved once in review {rid}"]


def test_fingerprint_window_covers_that_fingerprint_and_identity_only(people):
    rid = _create(count=1)
    now = utcnow()
    r = _vote(rid, "alice@example.com", window_minutes=30, now=now)
    assert r.status == "approved" and r.valid_until == now + timedelta(minutes=30)
    with session_scope() as s:
        fpa = s.scalars(select(FingerprintApproval)).one()
        assert (fpa.service_account, fpa.connection, fpa.fingerprint, fpa.review_id) == (SA, "orders-db", "fp-1", rid)
        assert fpa.expires_at == now + timedelta(minutes=30)
    for _ in range(3):
        assert _standing(now=now + timedelta(minutes=1)).startswith(f"shape approved in review {rid}")
    assert _standing(now=now + timedelta(minutes=29)) is not None
    assert _standing(now=now + timedelta(minutes=31)) is None
    assert _standing(fingerprint="fp-2", now=now) is None
    assert _standing(sa="other-agent", now=now) is None
    assert _standing(connection="billing-db", now=now) is None


def test_window_is_granted_only_when_every_approver_asked_for_one(people):
    both = _create(count=2, fingerprint="both")
    _vote(both, "alice@example.com", window_minutes=60)
    _vote(both, "bob@example.com", window_minutes=20)
    one = _create(count=2, fingerprint="one")
    _vote(one, "alice@example.com", window_minutes=60)
    assert _vote(one, "bob@example.com").details["window_minutes"] is None
    with session_scope() as s:
        rows = s.scalars(select(FingerprintApproval)).all()
        assert [(f.fingerprint, f.expires_at - f.created_at) for f in rows] == [("both", timedelta(minutes=20))]


@pytest.mark.parametrize("kwargs,why", [
    ({"window_minutes": 0}, "1..1440"),
    ({"window_minutes": 1441}, "1..1440"),
    ({"window_minutes": 5, "decision": "reject"}, "only applies to an approval"),
])
def test_bad_windows_are_refused(people, kwargs, why):
    rid = _create(count=1)
    kwargs = dict(kwargs)  # parametrize shares the dict between the two backends
    decision = kwargs.pop("decision", "approve")
    with pytest.raises(VoteError, match=why):
        _vote(rid, "alice@example.com", decision, **kwargs)
    assert _get(rid).status == "pending"


def test_window_needs_a_fingerprint(people):
    rid = _create(count=1, fingerprint="")
    with pytest.raises(VoteError, match="no fingerprint"):
        _vote(rid, "alice@example.com", window_minutes=10)


def test_find_pending_reattaches_identical_operations(people):
    rid = _create(count=1)

    def find(fp="fp-1", sa=SA):
        with session_scope() as s:
            r = approvals.find_pending(s, service_account=sa, connection="orders-db", binding=fp,
                                       rule="writes-need-review")
            return r.id if r else None

    assert find() == rid
    assert find(fp="fp-2") is None and find(sa="other-agent") is None
    _vote(rid, "alice@example.com", "reject")
    assert find() is None


def test_concurrent_votes_reach_the_quorum(people):
    for round_ in range(3):
        rid = _create(count=2, fingerprint=f"q-{round_}")
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def voter(email: str) -> None:
            try:
                start.wait()
                _vote(rid, email)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=voter, args=(e,)) for e in ("alice@example.com", "bob@example.com")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert _get(rid).status == "approved"
    assert _actions().count("review.approved") == 3


def test_wait_for_decision_sync_sees_a_vote_from_another_thread(people):
    rid = _create(count=1)
    timer = threading.Timer(0.3, _vote, args=(rid, "alice@example.com"))
    timer.start()
    assert approvals.wait_for_decision_sync(rid, 10, safety_interval=30) == "approved"
    timer.join()
    other = _create(count=1, fingerprint="other")
    assert approvals.wait_for_decision_sync(other, 0.2) == "pending"


def test_slack_votes_are_refused_for_portal_only_reviews(sqlite_store):
    from app.approvals import VoteError, create_review, vote
    from app.db import session_scope
    from app.models import Group, User
    from app.types import Operation, Principal, ReviewSpec, Verdict

    with session_scope() as s:
        s.add(User(email="dana@example.com", roles=["approver"], groups=[Group(name="dba")]))
        review = create_review(
            s,
            principal=Principal("etl-agent"),
            operation=Operation(protocol="postgres", connection="db", kind="write", text="delete from t where id=1",
                                fingerprint="fp"),
            verdict=Verdict("review", rule="sensitive", review=ReviewSpec(groups=("dba",), slack=False)),
        )
        s.flush()
        rid = review.id
    with session_scope() as s:
        try:
            vote(s, rid, voter_email="dana@example.com", decision="approve", via="slack")
        except VoteError as exc:
            assert "portal" in exc.message
        else:
            raise AssertionError("a Slack vote counted on a portal-only review")
    with session_scope() as s:
        assert vote(s, rid, voter_email="dana@example.com", decision="approve", via="portal").status == "approved"


# -- exact binding (issue 16, finding 1) ------------------------------------------------


def _sql(text: str, params=(), formats=(), types=()) -> str:
    from app.binding import sql_binding
    op = Operation(protocol="postgres", connection="orders-db", kind="write", text=text)
    return sql_binding(op, params, formats, types)


def test_sql_binding_covers_the_full_text_and_every_parameter_byte():
    base = _sql("UPDATE orders SET status='cancelled' WHERE id=2")
    assert base == _sql("UPDATE orders SET status='cancelled' WHERE id=2")
    assert base != _sql("UPDATE orders SET status='HIJACK' WHERE id=5")
    assert _sql("DELETE FROM orders WHERE id IN (3)") != _sql("DELETE FROM orders WHERE id IN (1,2,3,4,5)")
    stmt = "DELETE FROM orders WHERE id = $1"
    assert _sql(stmt, [b"3"]) == _sql(stmt, [b"3"])
    assert _sql(stmt, [b"3"]) != _sql(stmt, [b"4"])
    assert _sql(stmt, [b"3"]) != _sql(stmt, [b"3"], formats=[1])  # text "3" is not binary 0x33
    assert _sql(stmt, [b"3"]) != _sql(stmt, [b"3"], types=[20])
    assert _sql(stmt, [None]) != _sql(stmt, [b""])
    # Two long values that share their first kilobytes are still two operations.
    assert _sql(stmt, [b"x" * 5000 + b"a"]) != _sql(stmt, [b"x" * 5000 + b"b"])
    # Length-prefixed: moving a byte between parameters changes the digest.
    assert _sql(stmt, [b"ab", b"c"]) != _sql(stmt, [b"a", b"bc"])


def test_http_binding_covers_method_url_and_the_whole_body():
    from app.binding import http_binding
    op = Operation(protocol="http", connection="bank", kind="write", method="POST", host="bank.test",
                   text="POST https://bank.test/transfer")

    def b(body=b"amount=1", target="/transfer", method="POST", ctype="application/x-www-form-urlencoded",
          port=443, real="POST"):
        from dataclasses import replace
        return http_binding(replace(op, method=method), real_method=real, scheme="https", port=port, target=target,
                            content_type=ctype, content_encoding="", body=body)

    assert b() == b()
    assert b() != b(body=b"amount=99999&to=attacker")
    assert b() != b(target="/transfer?to=attacker")
    assert b() != b(method="PUT")
    assert b() != b(real="GET")  # the same named method under another real one
    assert b() != b(port=8443)
    assert b() != b(ctype="application/json")


def test_shape_text_shows_placeholders_and_what_a_window_covers():
    from app.binding import shape_text, window_note
    pg = Operation(protocol="postgres", connection="db", kind="write", text="DELETE FROM orders WHERE id IN (1,2,3)")
    assert shape_text(pg) == "DELETE FROM orders WHERE id IN ($1, …)"
    upd = Operation(protocol="postgres", connection="db", kind="write",
                    text="UPDATE orders SET status='cancelled' WHERE id=2")
    assert shape_text(upd) == "UPDATE orders SET status=$1 WHERE id=$2"
    http = Operation(protocol="http", connection="bank", kind="write", text="POST https://bank.test/t?amount=1&to=x")
    assert shape_text(http) == "POST https://bank.test/t?amount=*&to=* (any query values, any body)"
    assert "any length" in window_note("postgres") and "any body" in window_note("http")


def test_approve_once_matches_the_binding_not_the_shape(people):
    # Same shape (fingerprint), two different operations.
    rid = _create(count=1, fingerprint="shape-1")
    with session_scope() as s:
        s.get(Review, rid).binding = "exact-a"
    _vote(rid, "alice@example.com")
    assert _standing(fingerprint="shape-1", binding="exact-b") is None  # same shape, other values
    assert _standing(fingerprint="shape-1", binding="exact-a") == f"approved once in review {rid}"
    assert _standing(fingerprint="shape-1", binding="exact-a") is None  # used up


def test_a_held_operation_joins_only_a_review_of_the_exact_same_operation(people):
    rid = _create(count=1, fingerprint="shape-1")
    with session_scope() as s:
        s.get(Review, rid).binding = "exact-a"

    def find(binding):
        with session_scope() as s:
            r = approvals.find_pending(s, service_account=SA, connection="orders-db", binding=binding,
                                       rule="writes-need-review")
            return r.id if r else None

    assert find("exact-a") == rid
    assert find("exact-b") is None
    assert find("") is None


def test_review_used_records_the_operation_that_ran(people):
    rid = _create(count=1, fingerprint="used-1")
    _vote(rid, "alice@example.com")
    op = Operation(protocol="postgres", connection="orders-db", kind="write",
                   text="DELETE FROM orders WHERE id = $1", params=("7",))
    with session_scope() as s:
        assert approvals.standing_approval(s, service_account=SA, connection="orders-db", fingerprint="used-1",
                                           binding="used-1", rule="writes-need-review", ran=approvals.ran(op))
    with session_scope() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "review.used")).one()
        assert entry.data["operation"] == "DELETE FROM orders WHERE id = $1"
        assert entry.data["params"] == ["7"]
        assert entry.data["binding"] == "used-1"


def test_requester_gone_flags_the_review_and_a_returned_use_counts_again(people):
    rid = _create(count=1, fingerprint="gone-1")
    with session_scope() as s:
        approvals.requester_gone(s, rid, SA, "the client disconnected")
    r = _get(rid)
    assert r.status == "pending" and r.requester_gone_at is not None
    _vote(rid, "alice@example.com")
    assert _standing(fingerprint="gone-1") == f"approved once in review {rid}"
    with session_scope() as s:
        approvals.release_use(s, rid, "the client disconnected")
    assert _get(rid).consumed_at is None
    assert _standing(fingerprint="gone-1") == f"approved once in review {rid}"  # the retry may use it
    assert {"review.withdrawn", "review.use_returned"} <= set(_actions())


def test_a_revoked_window_stops_at_once_and_is_audited(people):
    rid = _create(count=1, fingerprint="win-1")
    _vote(rid, "alice@example.com", window_minutes=30)
    assert _standing(fingerprint="win-1", binding="other").startswith("shape approved")
    with session_scope() as s:
        (fpa, review), = windows.active_windows(s)
        assert review.id == rid
        windows.revoke_window(s, fpa.id, by="root@example.com")
    assert _standing(fingerprint="win-1", binding="other") is None
    with session_scope() as s:
        assert windows.active_windows(s) == []
        with pytest.raises(VoteError, match="already ended") as ended:
            windows.revoke_window(s, fpa.id, by="root@example.com")
        assert not isinstance(ended.value, NotFound)  # a conflict (409), not a 404
        with pytest.raises(approvals.WindowNotFound, match="window 424242 does not exist") as missing:
            windows.revoke_window(s, 424242, by="root@example.com")
        assert isinstance(missing.value, NotFound)  # the API and the portal answer 404 by type
    assert "window.revoked" in _actions()
