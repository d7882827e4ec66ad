"""PostgreSQL checks conversations against their tenant, and tasks against their job, per statement

0005 replaced the foreign keys of a conversation's rows with statement triggers. Two keys
that an upload writes row by row were left: conversations.tenant_id (to tenants) and
analysis_tasks.job_id (to analysis_jobs). An upload names one tenant and one job, yet each
key looked that row up and locked it again for every row stored: copying the
conversations of a 1M-message upload took the server 1.6 s with the key and 1.2 s without
it, and its analysis tasks 0.95 s and 0.5 s. These triggers keep the keys' rules, checked
once per statement, as 0005's do:

- A statement that stores conversations (tasks) locks each tenant (job) they name, once,
  FOR KEY SHARE as the key would, and fails with foreign_key_violation (23503) if one does
  not exist. A row moved to another tenant (job) is checked the same way, on its own.
- Deleting tenants deletes their conversations in the same statement (and 0005's trigger
  then their rows); deleting analysis jobs deletes their tasks. TRUNCATE empties them too.
  Such a delete must run in a READ COMMITTED transaction, as 0005 explains.
- A tenant's or a job's id never changes.

The functions take the tables and columns as trigger arguments, so both pairs share them.
SQLite keeps its foreign keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (child table, its column, parent table, what a parent is called in errors)
KEYS = (
    ("conversations", "tenant_id", "tenants", "tenant"),
    ("analysis_tasks", "job_id", "analysis_jobs", "analysis job"),
)

_MISSING = """
        RAISE EXCEPTION 'insert or update on table "%" names % %, which does not exist',
            TG_TABLE_NAME, TG_ARGV[2], {missing}
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;"""

# Arguments: the parent table, the column of the rows naming it, the parent's name in errors.
# The rows a statement stored (a transition table) must name parents that exist, which are
# locked as a key's check locks them.
CHECK_FUNCTION = f"""
CREATE FUNCTION powerpulse_check_parent_rows() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    named bigint[];
    locked bigint;
    missing bigint;
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT %I) FROM new_rows', TG_ARGV[1]) INTO named;
    IF named IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        'SELECT count(*) FROM (SELECT 1 FROM %I AS p WHERE p.id = ANY ($1)'
        ' FOR KEY SHARE OF p) AS l', TG_ARGV[0]) INTO locked USING named;
    IF locked < cardinality(named) THEN
        EXECUTE format(
            'SELECT min(n.id) FROM unnest($1) AS n(id)'
            ' WHERE NOT EXISTS (SELECT 1 FROM %I AS p WHERE p.id = n.id)', TG_ARGV[0])
            INTO missing USING named;
{_MISSING.format(missing="missing")}
    END IF;
    RETURN NULL;
END
$body$
"""

# The same arguments: a row moved to another parent (never done by PowerPulse).
CHECK_MOVED_FUNCTION = f"""
CREATE FUNCTION powerpulse_check_moved_to_parent() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    parent bigint;
    locked bigint;
BEGIN
    EXECUTE format('SELECT ($1).%I', TG_ARGV[1]) INTO parent USING NEW;
    EXECUTE format('SELECT 1 FROM %I AS p WHERE p.id = $1 FOR KEY SHARE OF p', TG_ARGV[0])
        USING parent;
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked = 0 THEN
{_MISSING.format(missing="parent")}
    END IF;
    RETURN NULL;
END
$body$
"""

# Arguments: the child table, its column naming the parent. See 0005 on READ COMMITTED.
DELETE_FUNCTION = """
CREATE FUNCTION powerpulse_delete_children() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    gone bigint[];
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% can only be deleted in a READ COMMITTED transaction', TG_TABLE_NAME
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Delete them without REPEATABLE READ or SERIALIZABLE.';
    END IF;
    SELECT array_agg(id) INTO gone FROM old_rows;
    IF gone IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DELETE FROM %I WHERE %I = ANY ($1)', TG_ARGV[0], TG_ARGV[1]) USING gone;
    RETURN NULL;
END
$body$
"""

# Argument: the child table.
TRUNCATE_FUNCTION = """
CREATE FUNCTION powerpulse_truncate_children() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    EXECUTE format('TRUNCATE %I', TG_ARGV[0]);
    RETURN NULL;
END
$body$
"""

# Argument: what a row of the table is called in errors.
KEEP_ID_FUNCTION = """
CREATE FUNCTION powerpulse_keep_id() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION 'the id of % % cannot change', TG_ARGV[0], OLD.id
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
END
$body$
"""

FUNCTIONS = (
    "powerpulse_check_parent_rows",
    "powerpulse_check_moved_to_parent",
    "powerpulse_delete_children",
    "powerpulse_truncate_children",
    "powerpulse_keep_id",
)


def trigger_names(child: str, parent: str) -> dict[str, tuple[str, str]]:
    """The triggers of one key: their table and name, by role."""
    single = parent.removesuffix("s").removeprefix("analysis_")
    return {
        "insert": (child, f"{child}_{single}_insert"),
        "update": (child, f"{child}_{single}_update"),
        "delete": (parent, f"{parent}_delete_{child}"),
        "truncate": (parent, f"{parent}_truncate_{child}"),
        "keep_id": (parent, f"{parent}_keep_id"),
    }


def _key_name(child: str, column: str) -> str:
    return f"{child}_{column}_fkey"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in (
        CHECK_FUNCTION,
        CHECK_MOVED_FUNCTION,
        DELETE_FUNCTION,
        TRUNCATE_FUNCTION,
        KEEP_ID_FUNCTION,
    ):
        op.execute(statement)
    for child, column, parent, noun in KEYS:
        names = trigger_names(child, parent)
        arguments = f"'{parent}', '{column}', '{noun}'"
        op.drop_constraint(_key_name(child, column), child, type_="foreignkey")
        op.execute(
            f"CREATE TRIGGER {names['insert'][1]} AFTER INSERT ON {child}"
            " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
            f" EXECUTE FUNCTION powerpulse_check_parent_rows({arguments})"
        )
        op.execute(
            f"CREATE TRIGGER {names['update'][1]} AFTER UPDATE OF {column} ON {child}"
            f" FOR EACH ROW WHEN (OLD.{column} IS DISTINCT FROM NEW.{column})"
            f" EXECUTE FUNCTION powerpulse_check_moved_to_parent({arguments})"
        )
        op.execute(
            f"CREATE TRIGGER {names['delete'][1]} AFTER DELETE ON {parent}"
            " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
            f" EXECUTE FUNCTION powerpulse_delete_children('{child}', '{column}')"
        )
        op.execute(
            f"CREATE TRIGGER {names['truncate'][1]} AFTER TRUNCATE ON {parent}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION powerpulse_truncate_children('{child}')"
        )
        op.execute(
            f"CREATE TRIGGER {names['keep_id'][1]} BEFORE UPDATE OF id ON {parent}"
            " FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)"
            f" EXECUTE FUNCTION powerpulse_keep_id('{noun}')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for child, column, parent, _ in KEYS:
        for table, name in trigger_names(child, parent).values():
            op.execute(f"DROP TRIGGER {name} ON {table}")
        op.create_foreign_key(
            _key_name(child, column), child, parent, [column], ["id"], ondelete="CASCADE"
        )
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
