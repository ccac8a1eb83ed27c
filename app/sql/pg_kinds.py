"""What each PostgreSQL statement, function and setting counts as (pure).

The vocabulary of the classifier (postgres.py), apart from its walk of the parse tree,
so that what a reviewer asks of it ("is this admin?") is answered in one place: the
statement nodes of a fixed kind, the drops and table changes above ddl, the functions
that write or administer, and what changing a setting amounts to (SET, RESET and
set_config alike). Ranks are indexes into app.types.KINDS (statement.py).
"""
from __future__ import annotations

from pglast.enums import AlterTableType, ObjectType

from .pg_session import conforming_value_safe, encoding_value_safe
from .statement import ADMIN, DCL, DDL, READ, TCL, WRITE, Facts

STATEMENT_RANK: dict[str, int] = {}  # statement nodes of one rank, whatever they hold
for _rank, _names in (
    (READ, "SetOperationStmt VariableShowStmt DeclareCursorStmt FetchStmt ClosePortalStmt "
           "ListenStmt UnlistenStmt PrepareStmt"),
    (TCL, "TransactionStmt DeallocateStmt ConstraintsSetStmt"),
    (WRITE, "InsertStmt MergeStmt LockStmt NotifyStmt RefreshMatViewStmt"),
    (DDL, "AlterCollationStmt AlterDatabaseRefreshCollStmt AlterDatabaseSetStmt "
          "AlterDatabaseStmt AlterDomainStmt AlterEnumStmt AlterFunctionStmt "
          "AlterObjectDependsStmt AlterObjectSchemaStmt AlterOpFamilyStmt AlterOperatorStmt "
          "AlterSeqStmt AlterStatsStmt AlterTSConfigurationStmt AlterTSDictionaryStmt "
          "AlterTableStmt AlterTableMoveAllStmt AlterTypeStmt CommentStmt CompositeTypeStmt "
          "CreateCastStmt CreateConversionStmt CreateDomainStmt CreateEnumStmt "
          "CreateForeignTableStmt CreateOpClassStmt CreateOpFamilyStmt CreateRangeStmt "
          "CreateSchemaStmt CreateSeqStmt CreateStatsStmt CreateStmt CreateTransformStmt "
          "CreateTrigStmt CreatedbStmt DefineStmt DropdbStmt ImportForeignSchemaStmt "
          "IndexStmt ReplicaIdentityStmt RuleStmt TruncateStmt ViewStmt"),
    (DCL, "AlterDefaultPrivilegesStmt AlterOwnerStmt AlterPolicyStmt AlterRoleSetStmt "
          "AlterRoleStmt CreatePolicyStmt CreateRoleStmt DropOwnedStmt DropRoleStmt "
          "GrantRoleStmt GrantStmt ReassignOwnedStmt SecLabelStmt"),
    (ADMIN, "AlterEventTrigStmt AlterExtensionContentsStmt AlterExtensionStmt AlterFdwStmt "
            "AlterForeignServerStmt AlterPublicationStmt AlterSubscriptionStmt "
            "AlterSystemStmt AlterTableSpaceOptionsStmt AlterUserMappingStmt "
            "CheckPointStmt ClusterStmt CreateAmStmt CreateEventTrigStmt "
            "CreateExtensionStmt CreateFdwStmt CreateForeignServerStmt CreatePLangStmt "
            "CreatePublicationStmt CreateSubscriptionStmt CreateTableSpaceStmt "
            "CreateUserMappingStmt DropSubscriptionStmt DropTableSpaceStmt "
            "DropUserMappingStmt LoadStmt ReindexStmt VacuumStmt"),
):
    STATEMENT_RANK.update(dict.fromkeys(_names.split(), _rank))

# Drops that are admin (DROP POLICY is dcl, any other drop ddl).
ADMIN_DROPS = frozenset({ObjectType.OBJECT_EVENT_TRIGGER, ObjectType.OBJECT_FDW,
                         ObjectType.OBJECT_FOREIGN_SERVER, ObjectType.OBJECT_EXTENSION,
                         ObjectType.OBJECT_LANGUAGE, ObjectType.OBJECT_ACCESS_METHOD,
                         ObjectType.OBJECT_PUBLICATION})
# ALTER TABLE changes that are dcl: owner and row-level security.
DCL_TABLE_COMMANDS = frozenset({AlterTableType.AT_ChangeOwner, AlterTableType.AT_EnableRowSecurity,
                                AlterTableType.AT_DisableRowSecurity, AlterTableType.AT_ForceRowSecurity,
                                AlterTableType.AT_NoForceRowSecurity})

_ADMIN_FUNCTIONS = frozenset("""
    pg_terminate_backend pg_cancel_backend pg_reload_conf pg_rotate_logfile pg_stat_file
    pg_switch_wal pg_promote pg_log_backend_memory_contexts pg_import_system_collations
    pg_backup_start pg_backup_stop pg_start_backup pg_stop_backup pg_logdir_ls
    lo_import lo_export query_to_xml query_to_xmlschema query_to_xml_and_xmlschema
    cursor_to_xml cursor_to_xmlschema
""".split())
# query_to_xml & co run SQL given as text, which nothing here can see.
_ADMIN_PREFIXES = ("dblink", "pg_ls_", "pg_read_", "pg_file_", "pg_stat_reset", "pg_create_",
                   "pg_drop_replication", "pg_copy_", "pg_replication_", "pg_logical_",
                   "pg_wal_replay_")
_WRITE_FUNCTIONS = frozenset("nextval setval pg_notify lo_unlink lo_create lo_creat lo_put "
                             "lo_from_bytea lowrite lo_truncate lo_truncate64".split())


def function_rank(bare: str) -> int:
    """The rank a call of the function `bare` (unqualified, lower case) adds by its name;
    set_config is judged by its arguments (postgres.py)."""
    if bare in _ADMIN_FUNCTIONS or bare.startswith(_ADMIN_PREFIXES):
        return ADMIN
    if bare in _WRITE_FUNCTIONS:
        return WRITE
    return READ


_ADMIN_SETTINGS = frozenset("""
    standard_conforming_strings backslash_quote session_replication_role
    allow_system_table_mods allow_in_place_tablespaces ignore_system_indexes
    zero_damaged_pages ignore_checksum_failure ignore_invalid_pages
    session_preload_libraries local_preload_libraries
""".split())
_ADMIN_SETTING_PREFIXES = ("log_", "debug_", "pgaudit.", "trace_")


def flag_setting(name: str, value: str | None, facts: Facts) -> None:
    """Changing a setting; `value` None means back to its default, "" a value that
    cannot be known from the text.

    Settings that change how the server reads later statements get "reparse" (the relay
    waits for the server to confirm them before it reads on), and "parser_divergence"
    when the new value could make the server read text otherwise than airlock does
    (airlock refuses those whatever the policy says).
    """
    name = name.lower()
    if name in ("role", "session_authorization"):
        facts.flag(DCL)
    elif name == "client_encoding":
        safe = encoding_value_safe(value)
        facts.flag(TCL if safe else ADMIN, "reparse", *(() if safe else ("parser_divergence",)))
    elif name == "standard_conforming_strings":
        facts.flag(ADMIN, "reparse", *(() if conforming_value_safe(value) else ("parser_divergence",)))
    elif name in _ADMIN_SETTINGS or name.startswith(_ADMIN_SETTING_PREFIXES):
        facts.flag(ADMIN)
    else:
        facts.flag(TCL)
