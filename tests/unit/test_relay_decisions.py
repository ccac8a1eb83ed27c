"""The relay's own decisions, as pure functions: COPY TO STDOUT and the function-call
protocol (app.policy.sql), and the masks that follow a cursor's rows (app.masking.cursors)."""
from __future__ import annotations

from app.masking.cursors import CursorMasks, mask_names, union
from app.policy.sql import copy_out_refusal, function_call_refusal
from app.types import MaskSpec

PII = MaskSpec(fields=("email",), rule="mask-pii")
CARDS = MaskSpec(detectors=("credit_card",), rule="mask-cards")
COPY = frozenset({"copy_to_stdout"})


def test_copy_to_stdout_needs_a_rule_by_name_and_no_mask():
    assert copy_out_refusal(COPY, (), "exports-may-be-copied") is None
    assert "needs a policy rule" in copy_out_refusal(COPY, (), None)
    refused = copy_out_refusal(COPY, (PII,), "exports-may-be-copied")
    assert "mask applies" in refused and "mask-pii" in refused


def test_other_statements_are_not_this_rules_business():
    assert copy_out_refusal(frozenset(), (PII,), None) is None
    assert copy_out_refusal(frozenset({"copy_from_stdin"}), (), None) is None


def test_a_function_call_never_passes():
    assert function_call_refusal() == "the function-call protocol is not allowed"


def test_a_cursor_read_carries_every_mask_seen_before():
    cursors = CursorMasks()
    assert cursors.applying((), has_targets=False) == ()  # nothing seen yet
    assert cursors.applying((PII,), has_targets=True) == (PII,)
    assert cursors.applying((CARDS,), has_targets=True) == (CARDS,)
    assert cursors.applying((), has_targets=False) == (PII, CARDS)  # FETCH: both apply
    assert cursors.applying((), has_targets=True) == ()  # a table of its own, unmasked: its own verdict


def test_a_remembered_verdict_is_not_reused_for_a_cursor_read_once_masks_were_seen():
    cursors = CursorMasks()
    assert cursors.reusable((), has_targets=False)
    assert cursors.reusable((PII,), has_targets=True)
    assert not cursors.reusable((), has_targets=False)
    assert cursors.reusable((), has_targets=True)
    assert cursors.seen == (PII,)


def test_union_keeps_each_mask_once_in_order():
    assert union((PII,), (CARDS, PII)) == (PII, CARDS)
    assert union((), (CARDS,)) == (CARDS,)
    assert mask_names((CARDS, PII, CARDS)) == ["mask-cards", "mask-pii"]
