"""PostgreSQL checks a conversation's rows against it once per statement, not per row

messages, reply_events, conversation_agents, conversation_analyses, conversation_topics and
analysis_tasks each belong to a conversation. A foreign key checks that on PostgreSQL with
one lookup and one row lock for every row stored: copying an upload's million messages
spent more time in those checks than in everything else the server does with the rows.
These triggers keep the same rules, checked per statement over the statement's rows:

- A statement that stores rows locks each conversation they name, once, as the key would
  (FOR KEY SHARE, so the conversation cannot be deleted until the writer commits), and
  fails with foreign_key_violation (23503) if any does not exist. A row moved to another
  conversation is checked the same way, on its own.
- Deleting conversations deletes their rows in the same statement (ON DELETE CASCADE), and
  so does deleting a tenant, whose own key deletes its conversations. TRUNCATE of
  conversations empties the six tables as well. Such a delete must run in a READ COMMITTED
  transaction (PostgreSQL's default), where it sees rows committed while it waited for
  their writer; in REPEATABLE READ or SERIALIZABLE it is refused.
- A conversation's id never changes.

SQLite keeps its foreign keys: it checks them with a lookup in its own process, a small
part of its ingest.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "messages",
    "reply_events",
    "conversation_agents",
    "conversation_analyses",
    "conversation_topics",
    "analysis_tasks",
)


def _raise_missing(conversation_id: str) -> str:
    """The error a foreign key raises, naming the missing conversation."""
    return (
        '        RAISE EXCEPTION \'insert or update on table "%" names conversation %,'
        f" which does not exist', TG_TABLE_NAME, {conversation_id}\n"
        "            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;"
    )


# The rows a statement stored (a transition table): the conversations they name must exist,
# and are locked as a foreign key check locks them. The lookup is by the primary key,
# whatever the planner thinks of a table whose statistics predate the upload that fills it.
CHECK_FUNCTION = f"""
CREATE FUNCTION powerpulse_check_conversation_rows() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    named bigint[];
    locked bigint;
    missing bigint;
BEGIN
    SELECT array_agg(DISTINCT conversation_id) INTO named FROM new_rows;
    IF named IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT count(*) INTO locked
    FROM (SELECT 1 FROM conversations AS c WHERE c.id = ANY (named) FOR KEY SHARE OF c) AS l;
    IF locked < cardinality(named) THEN
        SELECT min(id) INTO missing FROM unnest(named) AS n(id)
        WHERE NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.id = n.id);
{_raise_missing("missing")}
    END IF;
    RETURN NULL;
END
$body$
"""

# A row moved to another conversation (never done by PowerPulse): checked on its own, so an
# UPDATE that leaves conversation_id alone, as every one of PowerPulse's does, costs nothing.
CHECK_MOVED_FUNCTION = f"""
CREATE FUNCTION powerpulse_check_moved_row() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    PERFORM 1 FROM conversations AS c WHERE c.id = NEW.conversation_id FOR KEY SHARE OF c;
    IF NOT FOUND THEN
{_raise_missing("NEW.conversation_id")}
    END IF;
    RETURN NULL;
END
$body$
"""

DELETES = "\n".join(
    f"    DELETE FROM {table} WHERE conversation_id = ANY (gone);" for table in TABLES
)
DELETE_FUNCTION = f"""
CREATE FUNCTION powerpulse_delete_conversation_rows() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    gone bigint[];
BEGIN
    -- A snapshot older than the statement would miss rows that a writer committed while
    -- this delete waited for it (a key's cascade checks for them; this one cannot).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'conversations can only be deleted in a READ COMMITTED transaction'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Delete them (or their tenant) without REPEATABLE READ or SERIALIZABLE.';
    END IF;
    SELECT array_agg(id) INTO gone FROM old_rows;
    IF gone IS NULL THEN
        RETURN NULL;
    END IF;
{DELETES}
    RETURN NULL;
END
$body$
"""

TRUNCATE_FUNCTION = f"""
CREATE FUNCTION powerpulse_truncate_conversation_rows() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    TRUNCATE {", ".join(TABLES)};
    RETURN NULL;
END
$body$
"""

KEEP_ID_FUNCTION = """
CREATE FUNCTION powerpulse_keep_conversation_id() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION 'the id of conversation % cannot change', OLD.id
        USING ERRCODE = 'foreign_key_violation', TABLE = 'conversations';
END
$body$
"""

FUNCTIONS = (
    "powerpulse_check_conversation_rows",
    "powerpulse_check_moved_row",
    "powerpulse_delete_conversation_rows",
    "powerpulse_truncate_conversation_rows",
    "powerpulse_keep_conversation_id",
)


def _key_name(table: str) -> str:
    return f"{table}_conversation_id_fkey"


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
    for table in TABLES:
        op.drop_constraint(_key_name(table), table, type_="foreignkey")
        op.execute(
            f"CREATE TRIGGER {table}_conversation_insert AFTER INSERT ON {table}"
            " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
            " EXECUTE FUNCTION powerpulse_check_conversation_rows()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_conversation_update AFTER UPDATE OF conversation_id"
            f" ON {table} FOR EACH ROW"
            " WHEN (OLD.conversation_id IS DISTINCT FROM NEW.conversation_id)"
            " EXECUTE FUNCTION powerpulse_check_moved_row()"
        )
    op.execute(
        "CREATE TRIGGER conversations_delete_rows AFTER DELETE ON conversations"
        " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION powerpulse_delete_conversation_rows()"
    )
    op.execute(
        "CREATE TRIGGER conversations_truncate_rows AFTER TRUNCATE ON conversations"
        " FOR EACH STATEMENT EXECUTE FUNCTION powerpulse_truncate_conversation_rows()"
    )
    op.execute(
        "CREATE TRIGGER conversations_keep_id BEFORE UPDATE OF id ON conversations"
        " FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)"
        " EXECUTE FUNCTION powerpulse_keep_conversation_id()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in (
        "conversations_delete_rows",
        "conversations_truncate_rows",
        "conversations_keep_id",
    ):
        op.execute(f"DROP TRIGGER {name} ON conversations")
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_conversation_insert ON {table}")
        op.execute(f"DROP TRIGGER {table}_conversation_update ON {table}")
        op.create_foreign_key(
            _key_name(table),
            table,
            "conversations",
            ["conversation_id"],
            ["id"],
            ondelete="CASCADE",
        )
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
