"""The rule language: load and validate the YAML policy, compile rules, evaluate operations.

Pure code: no I/O. The gate compiles the store's rules and grants once per policy
version and calls `evaluate` for every operation.
"""
from .engine import CompiledPolicy, ConnectionDefault, compile_policy, evaluate
from .errors import PolicyError, PolicyIssue
from .loader import document_from_dict, dump_policy, line_of, load_policy
from .model import (Approvers, CampaignSpec, ConnectionSpec, GrantSpec, Match, OidcSpec, PolicyDocument,
                    ServiceAccountSpec, TimeWindow, UserSpec)
from .rules import Rule, rule_from_dict
from .values import cron_to_apscheduler, parse_cron, parse_duration, parse_timestamp, secret_refs

__all__ = [
    "Approvers", "CampaignSpec", "CompiledPolicy", "ConnectionDefault", "ConnectionSpec", "GrantSpec", "Match", "OidcSpec", "PolicyDocument",
    "PolicyError", "PolicyIssue", "Rule", "ServiceAccountSpec", "TimeWindow", "UserSpec",
    "compile_policy", "cron_to_apscheduler", "document_from_dict", "evaluate", "dump_policy", "line_of", "load_policy", "parse_cron",
    "parse_duration", "parse_timestamp", "rule_from_dict", "secret_refs",
]
