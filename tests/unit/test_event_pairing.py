"""Which decision an answer belongs to, with hand-built events: by the HTTP flow both
name (HTTP/2 streams of one connection interleave), else, for SQL and for recordings
from before decisions named their flow, by order as before."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from app.db import session_scope
from app.models import RecordedSession, Review, SessionEvent
from app.portal import events as ev
from app.portal import review_context

URL_A, URL_B = "https://api.test/slow", "https://api.test/quick"


def _events(items: list[tuple[str, dict]]) -> list[ev.Event]:
    return ev.parse([(i, i * 0.01, kind, json.dumps(data)) for i, (kind, data) in enumerate(items, 1)])


def _input(flow: str, url: str) -> tuple[str, dict]:
    return "input", {"flow": flow, "method": "GET", "url": url, "headers": {}}


def _decision(url: str, flow: str | None = None, **extra) -> tuple[str, dict]:
    data = {"action": "allow", "status": None, "rule": None, "kind": "GET", "operation": f"GET {url}",
            "masks": ["mask-pii"], **extra}
    return "decision", (data if flow is None else {**data, "flow": flow})


def _output(flow: str, masked: int = 0, status: int = 200) -> tuple[str, dict]:
    return "output", {"flow": flow, "status": status, "headers": {}, **({"masked": masked} if masked else {})}


# -- decision_for ----------------------------------------------------------------------

def test_an_answer_belongs_to_the_decision_of_its_flow_not_the_latest():
    earlier = [(2, {"operation": f"GET {URL_A}", "flow": "a"}), (4, {"operation": f"GET {URL_B}", "flow": "b"})]
    assert ev.decision_for({"flow": "a", "masked": 3}, earlier) == 2
    assert ev.decision_for({"flow": "b"}, earlier) == 4


def test_an_answer_whose_decision_is_not_at_hand_is_nobody_elses():
    earlier = [(4, {"operation": f"GET {URL_B}", "flow": "b"})]
    assert ev.decision_for({"flow": "a", "masked": 3}, earlier) is None


def test_older_recordings_pair_by_order_with_decisions_that_name_no_flow():
    earlier = [(2, {"operation": f"GET {URL_A}"}), (5, {"operation": f"GET {URL_B}"})]
    assert ev.decision_for({"flow": "a", "masked": 1}, earlier) == 5  # what could be told before
    mixed = earlier + [(7, {"operation": f"GET {URL_B}", "flow": "c"})]
    assert ev.decision_for({"flow": "a"}, mixed) == 5  # a flow's decision is never another's


def test_sql_answers_pair_with_the_latest_decision_of_their_statement():
    earlier = [(1, {"operation": "SELECT email FROM users"}), (3, {"operation": "SELECT 1"})]
    assert ev.decision_for({"sql": "SELECT email FROM users", "masked": 2}, earlier) == 1
    assert ev.decision_for({"tag": "SELECT 1", "masked": 2}, earlier) == 3
    assert ev.decision_for({"sql": "DELETE FROM t"}, earlier) is None


# -- the session replay ------------------------------------------------------------------

def _by_url(steps: list[ev.Step]) -> dict[str, ev.Step]:
    return {(s.request or {}).get("url") or (s.decision or {}).get("operation"): s for s in steps}


def test_replay_pairs_interleaved_streams_by_flow():
    """Both requests arrive before either is decided; the quick one is answered first."""
    steps, loose = ev.steps(_events([
        _input("a", URL_A), _input("b", URL_B), _decision(URL_A, "a"), _decision(URL_B, "b"),
        _output("b"), _output("a", masked=3),
    ]))
    assert not loose and len(steps) == 2
    a, b = _by_url(steps)[URL_A], _by_url(steps)[URL_B]
    assert a.decision["flow"] == "a" and a.response["flow"] == "a" and a.verdict == "masked" and a.masked == 3
    assert b.decision["flow"] == "b" and b.response["flow"] == "b" and b.verdict == "allow" and b.masked == 0


def test_replay_pairs_held_streams_decided_in_turn():
    """Two held streams: one approved and answered, then the other rejected."""
    steps, _ = ev.steps(_events([
        _input("a", URL_A), _input("b", URL_B),
        _decision(URL_A, "a", status="approved", review_id=1), _output("a", masked=1),
        _decision(URL_B, "b", action="deny", status="rejected", review_id=2), _output("b", status=403),
    ]))
    assert len(steps) == 2
    a, b = _by_url(steps)[URL_A], _by_url(steps)[URL_B]
    assert a.verdict == "held-allow" and a.masked == 1 and a.response["status"] == 200
    assert b.verdict == "held-deny" and b.masked == 0 and b.response["status"] == 403


def test_replay_of_an_older_recording_pairs_by_order_as_before():
    steps, _ = ev.steps(_events([
        _input("a", URL_A), _decision(URL_A), _output("a", masked=2),
        _input("b", URL_B), _decision(URL_B), _output("b"),
    ]))
    a, b = _by_url(steps)[URL_A], _by_url(steps)[URL_B]
    assert a.decision["operation"] == f"GET {URL_A}" and a.masked == 2
    assert b.decision["operation"] == f"GET {URL_B}" and b.masked == 0


def test_websocket_answers_go_to_the_oldest_open_message_of_their_flow():
    steps, _ = ev.steps(_events([
        _input("w", "wss://api.test/ws"), _decision("wss://api.test/ws", "w"), _output("w", status=101),
        ("input", {"flow": "w", "websocket": True, "text": "one"}),
        ("input", {"flow": "w", "websocket": True, "text": "two"}),
        ("output", {"flow": "w", "websocket": True, "text": "re one"}),
        ("output", {"flow": "w", "websocket": True, "text": "re two"}),
    ]))
    assert [(s.request or {}).get("text") for s in steps] == [None, "one", "two"]
    assert [(s.response or {}).get("text") for s in steps[1:]] == ["re one", "re two"]


# -- a review's context ----------------------------------------------------------------------

def _record(items: list[tuple[str, dict]], run: str, protocol: str = "http") -> None:
    started = datetime.now(timezone.utc) - timedelta(minutes=5)
    with session_scope() as s:
        sid = f"sess-{run}"
        s.add(RecordedSession(id=sid, protocol=protocol, connection="api", service_account="agent", run_id=run,
                              started_at=started))
        s.flush()
        for seq, (kind, data) in enumerate(items, 1):
            s.add(SessionEvent(session_id=sid, seq=seq, t=seq * 0.01, kind=kind, data=json.dumps(data)))


def _run_steps(run: str) -> dict[str, dict]:
    with session_scope() as s:
        review = Review(run_id=run, created_at=datetime.now(timezone.utc))
        return {step["operation"]: step for step in review_context.run_steps(s, review)}


def test_review_context_shows_masked_on_the_stream_whose_answer_was_masked(sqlite_store):
    """The slow stream is decided first and answered last: the quick stream's decision is
    the latest before the masked answer, and must not be shown as masked."""
    _record([_input("a", URL_A), _decision(URL_A, "a"), _input("b", URL_B), _decision(URL_B, "b"),
             _output("b"), _output("a", masked=4)], "h2")
    steps = _run_steps("h2")
    assert (steps[f"GET {URL_A}"]["verdict"], steps[f"GET {URL_A}"]["masked"]) == ("masked", 4)
    assert (steps[f"GET {URL_B}"]["verdict"], steps[f"GET {URL_B}"]["masked"]) == ("allow", 0)


def test_review_context_of_an_older_recording_pairs_by_order(sqlite_store):
    _record([_input("a", URL_A), _decision(URL_A), _output("a", masked=2),
             _input("b", URL_B), _decision(URL_B), _output("b")], "old")
    steps = _run_steps("old")
    assert (steps[f"GET {URL_A}"]["verdict"], steps[f"GET {URL_A}"]["masked"]) == ("masked", 2)
    assert (steps[f"GET {URL_B}"]["verdict"], steps[f"GET {URL_B}"]["masked"]) == ("allow", 0)


def test_review_context_pairs_sql_answers_by_statement(sqlite_store):
    _record([("decision", {"action": "allow", "operation": "SELECT email FROM users", "masks": ["mask-pii"]}),
             ("decision", {"action": "allow", "operation": "SELECT 1", "masks": ["mask-pii"]}),
             ("output", {"sql": "SELECT email FROM users", "tag": "SELECT 3", "masked": 3}),
             ("output", {"sql": "SELECT 1", "tag": "SELECT 1"})], "sql", protocol="postgres")
    steps = _run_steps("sql")
    assert (steps["SELECT email FROM users"]["verdict"], steps["SELECT email FROM users"]["masked"]) == ("masked", 3)
    assert steps["SELECT 1"]["verdict"] == "allow" and steps["SELECT 1"]["masked"] == 0


# -- what the proxy writes ------------------------------------------------------------------

class _Session:
    id, connection = "sess-1", ""

    def __init__(self) -> None:
        self.written: list[tuple[str, object]] = []

    def event(self, kind, data) -> None:
        self.written.append((kind, data))

    def update(self, **values) -> None:
        self.connection = values.get("connection", self.connection)


def test_every_event_of_an_exchange_names_its_flow_the_gates_decision_too():
    from addons.recording import ExchangeRecording
    from app.gate import decision_event
    from app.types import Operation, Verdict

    session = _Session()
    rec = ExchangeRecording(session, "flow-1")
    op = Operation(protocol="http", connection="api", kind="read", text=f"GET {URL_A}")
    rec.event("decision", decision_event(op, Verdict("allow")))  # as the gate writes it
    rec.event("output", {"flow": "flow-1", "status": 200})
    rec.event("notice", "plain text")
    assert [d["flow"] for _, d in session.written[:2]] == ["flow-1", "flow-1"]
    assert session.written[2] == ("notice", "plain text")
    assert rec.id == "sess-1" and rec.session is session
    rec.update(connection="api")  # the gatekeeper names the connection once routed
    assert rec.connection == session.connection == "api"
