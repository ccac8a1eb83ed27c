"""The relay's per-session memory of allowed statement shapes (app/relay/pgshapes.py)."""
from __future__ import annotations

from app.relay.postgres.checks import operations
from app.relay.pgshapes import MAX_SHAPES, AllowedShapes
from app.types import MaskSpec, Principal, Verdict

WHO = Principal("agent")
ALLOW = Verdict("allow", rule="reads-ok")


class FakeGate:
    def __init__(self):
        self.current = (1, 100)
        self.textual = False

    def stamp(self):
        return self.current

    def shares_verdict(self, principal, op):
        return not self.textual


def remembered(text: str, verdict: Verdict = ALLOW, gate: FakeGate | None = None) -> AllowedShapes:
    gate = gate or FakeGate()
    shapes = AllowedShapes(gate)
    (op,) = operations(text, "db")
    shapes.remember(text, op, verdict, None, gate.stamp(), WHO)
    return shapes


def test_a_text_that_differs_only_in_numbers_reuses_the_verdict_and_cuts_its_own_statement():
    shapes = remembered("  SELECT abalance FROM pgbench_accounts WHERE aid = 7;  ")
    shape, statement = shapes.lookup("  SELECT abalance FROM pgbench_accounts WHERE aid = 123456;  ")
    assert statement == "SELECT abalance FROM pgbench_accounts WHERE aid = 123456"
    assert shape.rule == "reads-ok" and shape.has_targets and shape.masker is None


def test_other_words_or_other_tables_are_a_different_shape():
    shapes = remembered("SELECT a FROM t WHERE id = 1")
    assert shapes.lookup("SELECT a FROM t2 WHERE id = 1") is None
    assert shapes.lookup("SELECT a FROM t WHERE id = '1'") is None  # quotes: never normalised
    assert shapes.lookup("SELECT a FROM t WHERE id = 1 -- 2") is None  # comments: never normalised
    assert shapes.lookup("select a from t where id = 1") is None  # the text is the key, case included


def test_a_new_policy_version_or_minute_or_a_due_store_check_forgets_the_shape():
    gate = FakeGate()
    shapes = remembered("SELECT a FROM t WHERE id = 1", gate=gate)
    assert shapes.lookup("SELECT a FROM t WHERE id = 2") is not None
    gate.current = (2, 100)
    assert shapes.lookup("SELECT a FROM t WHERE id = 2") is None
    gate.current = (2, 100)
    assert shapes.lookup("SELECT a FROM t WHERE id = 2") is None  # forgotten, not revived
    shapes = remembered("SELECT a FROM t WHERE id = 1", gate=gate)
    gate.current = None  # the gate must look at the store first
    assert shapes.lookup("SELECT a FROM t WHERE id = 2") is None
    gate.current = (2, 100)  # it did, and nothing changed: the shape holds again
    assert shapes.lookup("SELECT a FROM t WHERE id = 2") is not None


def test_only_plain_allows_of_text_blind_rules_are_remembered():
    text, other = "UPDATE payroll SET x = 1 WHERE id = 2", "UPDATE payroll SET x = 1 WHERE id = 3"
    for verdict in (Verdict("deny", rule="no"), Verdict("review", rule="r"),
                    Verdict("allow", rule="r", status="approved", review_id=4)):
        assert remembered(text, verdict).lookup(other) is None
    gate = FakeGate()
    gate.textual = True
    assert remembered(text, gate=gate).lookup(other) is None
    stale = AllowedShapes(FakeGate())
    (op,) = operations(text, "db")
    stale.remember(text, op, ALLOW, None, None, WHO)  # no stamp: the gate was not fresh
    assert stale.lookup(other) is None


def test_statements_that_name_things_or_copy_are_never_remembered():
    for text, other in (("PREPARE p1 AS SELECT 1", "PREPARE p1 AS SELECT 2"),
                        ("DEALLOCATE p1", "DEALLOCATE p2"),
                        ("DECLARE c1 CURSOR FOR SELECT 1", "DECLARE c1 CURSOR FOR SELECT 2"),
                        ("COPY t TO STDOUT", "COPY t TO STDOUT")):
        assert remembered(text).lookup(other) is None, text


def test_masks_travel_with_the_shape():
    mask = MaskSpec(fields=("abalance",), rule="mask-balance")
    shapes = remembered("SELECT abalance FROM a WHERE aid = 1", Verdict("allow", rule="ok", masks=(mask,)))
    shape, _ = shapes.lookup("SELECT abalance FROM a WHERE aid = 2")
    assert shape.masks == (mask,) and shape.mask_names == ["mask-balance"]


def test_memory_is_bounded():
    gate = FakeGate()
    shapes = AllowedShapes(gate)
    for i in range(MAX_SHAPES + 5):
        text = f"SELECT a FROM t{'x' * (i % 50)}_{chr(97 + i // 50)} WHERE id = 1"
        (op,) = operations(text, "db")
        shapes.remember(text, op, ALLOW, None, gate.stamp(), WHO)
    assert len(shapes._shapes) <= MAX_SHAPES
