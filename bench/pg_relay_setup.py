"""Store and policy for bench/pg_relay.sh (run by it; not a benchmark on its own).

    pg_relay_setup.py init DB        migrate the store, apply the 20-rule policy, print a token
    pg_relay_setup.py mask DB        re-apply the policy plus a mask on pgbench_accounts.abalance
    pg_relay_setup.py plain DB       re-apply the policy without the mask

AIRLOCK_HOME / AIRLOCK_SECRET_KEY come from the environment (the script sets them).
"""
from __future__ import annotations

import sys
from datetime import timedelta

from app.config import settings
from app.db import session_scope
from app.identity import issue_token
from app.inventory import apply_policy
from app.migrate import upgrade
from app.policy import load_policy

# 20 rules of the kinds a real deployment has; none masks what pgbench -S reads, and
# several are evaluated for every statement (table patterns, kinds, attributes).
RULES = """
  - {name: no-ddl, match: {protocol: postgres, kind: [ddl]}, action: deny}
  - {name: no-dcl, match: {protocol: postgres, kind: [dcl]}, action: deny}
  - {name: no-admin, match: {protocol: postgres, kind: [admin]}, action: deny}
  - {name: no-unbounded, match: {protocol: postgres, attributes: [unbounded]}, action: deny}
  - {name: no-copy-program, match: {protocol: postgres, attributes: [copy_program]}, action: deny}
  - {name: audit-append-only, match: {protocol: postgres, kind: write, tables: [audit_*]}, action: deny}
  - {name: no-secrets, match: {protocol: postgres, tables: [secrets, vault_*]}, action: deny}
  - {name: payroll-review, match: {protocol: postgres, kind: write, tables: [payroll]},
     action: review, approvers: {groups: [dba]}}
  - {name: refunds-review, match: {protocol: postgres, kind: write, tables: [refunds*]},
     action: review, approvers: {groups: [dba]}}
  - {name: users-review, match: {protocol: postgres, kind: write, tables: [users]},
     action: review, approvers: {groups: [dba]}}
  - {name: mask-users, match: {protocol: postgres, tables: [users]}, action: mask, fields: [email, phone]}
  - {name: mask-cards, match: {protocol: postgres, tables: [payments]}, action: mask, detectors: [credit_card]}
  - {name: mask-ssn, match: {protocol: postgres, tables: [employees]}, action: mask, fields: [ssn],
     strategy: hash}
  - {name: mask-notes, match: {protocol: postgres, tables: [tickets]}, action: mask, detectors: [email]}
  - {name: reads-ok, match: {protocol: postgres, kind: read}, action: allow}
  - {name: tcl-ok, match: {protocol: postgres, kind: tcl}, action: allow}
  - {name: pgbench-writes, match: {protocol: postgres, kind: write, tables: ["pgbench_*"]}, action: allow}
  - {name: http-no-admin, match: {protocol: http, path: "/admin*"}, action: deny}
  - {name: ssh-no-rm, match: {protocol: ssh, command: "rm *"}, action: deny}
  - {name: mysql-no-ddl, match: {protocol: mysql, kind: [ddl]}, action: deny}
"""

POLICY = """
version: 1
service_accounts: [{{name: bench, groups: [bots]}}]
users: [{{email: dba@example.com, groups: [dba]}}]
connections:
  - {{name: bench, type: postgres, address: "127.0.0.1:5432", database: {db}, username: postgres}}
grants: [{{service_account: bench, connection: bench}}]
rules:{rules}{extra}
"""

MASK = """
  - {name: mask-balance, match: {protocol: postgres, tables: [pgbench_accounts]}, action: mask,
     fields: [abalance]}
"""


def apply(db: str, extra: str = "") -> None:
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY.format(db=db, rules=RULES, extra=extra)), actor="bench")


def main() -> None:
    command, db = sys.argv[1], sys.argv[2]
    if command == "init":
        upgrade(settings().database_url)
        apply(db)
        with session_scope() as s:
            print(issue_token(s, "bench", timedelta(hours=4)).token)
    elif command == "mask":
        apply(db, MASK)
    elif command == "plain":
        apply(db)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
