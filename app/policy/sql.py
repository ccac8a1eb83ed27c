"""Decisions on SQL that come before any rule (pure): what the relay cannot check or
cannot mask is refused here, whatever the policy says, and the adapter only turns the
reason into its protocol's error.

- COPY ... TO STDOUT: its rows travel as CopyData, which the relay cannot mask, and it
  exports whole tables, so it runs only where no mask applies and a rule allows it by
  name (`match: attributes: [copy_to_stdout]`), never by a connection's default.
- The function-call protocol (PostgreSQL's FunctionCall message) calls a function by
  OID, with no SQL text to check: it never passes.
"""
from __future__ import annotations

from app.types import MaskSpec

COPY_TO_STDOUT = "copy_to_stdout"  # the Operation attribute app.sql sets on COPY ... TO STDOUT
FUNCTION_CALL_REFUSED = "the function-call protocol is not allowed"


def copy_out_refusal(attributes: frozenset[str], masks: tuple[MaskSpec, ...], rule: str | None) -> str | None:
    """Why an allowed statement with these attributes, masks and allowing rule may not run, or None."""
    if COPY_TO_STDOUT not in attributes:
        return None
    if masks:
        return (f"COPY ... TO STDOUT is refused because a mask applies to its rows (rule {masks[0].rule}); "
                "use SELECT instead")
    if rule is None:
        return "COPY ... TO STDOUT needs a policy rule that allows it (match attributes: [copy_to_stdout])"
    return None


def function_call_refusal() -> str:
    """Why a FunctionCall message is refused: always."""
    return FUNCTION_CALL_REFUSED
