"""The gate's verdicts by statement shape, the relay's fast path (app/gate/shapes.py)."""
from __future__ import annotations

from app.gate.shapes import MAX_SHAPES, MAX_TABLES, ShapeMemory, ShapeTable
from app.sql import classify_postgres_cached
from app.types import MaskSpec, Operation, Principal, Verdict

WHO = Principal("agent")
ALLOW = Verdict("allow", rule="reads-ok")


def operations(text: str, connection: str) -> list[Operation]:
    # As the PostgreSQL relay builds them (its classification, cached).
    return [Operation(protocol="postgres", connection=connection, kind=st.kind, text=st.text,
                      targets=st.tables + st.functions, attributes=st.attributes, fingerprint=st.fingerprint)
            for st in classify_postgres_cached(text)]


class FakeGate:
    def __init__(self):
        self.current = (1, 100)
        self.textual = False

    def stamp(self):
        return self.current

    def shares_verdict(self, principal, op):
        return not self.textual


def remembered(text: str, verdict: Verdict = ALLOW, gate: FakeGate | None = None) -> ShapeTable:
    gate = gate or FakeGate()
    shapes = ShapeTable(gate)
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
    stale = ShapeTable(FakeGate())
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
    shapes = ShapeTable(gate)
    for i in range(MAX_SHAPES + 5):
        text = f"SELECT a FROM t{'x' * (i % 50)}_{chr(97 + i // 50)} WHERE id = 1"
        (op,) = operations(text, "db")
        shapes.remember(text, op, ALLOW, None, gate.stamp(), WHO)
    assert len(shapes.table) <= MAX_SHAPES


def test_each_principal_and_connection_has_its_own_table_and_clear_forgets_them_all():
    gate = FakeGate()
    memory = ShapeMemory(gate)
    mine = memory.table(WHO, "db")
    assert memory.table(WHO, "db") is mine
    other_db, other_who = memory.table(WHO, "db2"), memory.table(Principal("someone-else"), "db")
    assert other_db is not mine and other_who is not mine
    text = "SELECT a FROM t WHERE id = 1"
    (op,) = operations(text, "db")
    mine.remember(text, op, ALLOW, None, gate.stamp(), WHO)
    assert mine.lookup("SELECT a FROM t WHERE id = 9") is not None
    assert other_db.lookup("SELECT a FROM t WHERE id = 9") is None
    assert other_who.lookup("SELECT a FROM t WHERE id = 9") is None
    memory.clear()
    assert mine.lookup("SELECT a FROM t WHERE id = 9") is None
    assert memory.table(WHO, "db") is mine  # cleared in place: the fast lane keeps reading the same dict


def test_the_number_of_tables_is_bounded():
    memory = ShapeMemory(FakeGate())
    first = memory.table(Principal("p0"), "db")
    text = "SELECT a FROM t WHERE id = 1"
    (op,) = operations(text, "db")
    first.remember(text, op, ALLOW, None, (1, 100), Principal("p0"))
    for i in range(1, MAX_TABLES + 1):
        memory.table(Principal(f"p{i}"), "db")
    assert len(memory._tables) == MAX_TABLES
    assert not first.table  # the evicted table was emptied
    assert memory.table(Principal("p0"), "db") is not first
