/**
 * Capacity held per licence and feature (Scale): the current units (capacity_state, the row
 * Scale locks to serialize changes and the snapshot loader reads), every change over time
 * (capacity_ledger, which billing integrates), and the stored answers that make Scale
 * idempotent by request_id (capacity_requests).
 *
 * Frozen once landed. SQL must run on PostgreSQL 15 and PGlite (PostgreSQL 17).
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function up(db: Kysely<any>): Promise<void> {
  // The units held now. Absent: the entitlement's `limit` (the rules' initial units) holds.
  await db.schema
    .createTable("capacity_state")
    .addColumn("license_id", "text", (c) => c.notNull().references("licenses.id").onDelete("cascade"))
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("units", "bigint", (c) => c.notNull())
    // Grows by one on every change of units.
    .addColumn("version", "bigint", (c) => c.notNull().defaultTo(1))
    // The last change of units by Scale (either direction); cooldowns count from it. Null: none.
    .addColumn("last_change_at", "timestamptz")
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("capacity_state_pkey", ["license_id", "feature"])
    .addCheckConstraint("capacity_state_units_check", sql`units >= 0`)
    .execute();

  // Every change of units: [valid_from, valid_to) with valid_to null for the current row.
  // Kept when a licence is deleted (no foreign key): it is billing history.
  await db.schema
    .createTable("capacity_ledger")
    .addColumn("id", "bigint", (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn("license_id", "text", (c) => c.notNull())
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("units", "bigint", (c) => c.notNull())
    .addColumn("valid_from", "timestamptz", (c) => c.notNull())
    .addColumn("valid_to", "timestamptz")
    .addColumn("reason", "text", (c) => c.notNull())
    .addColumn("caller", "text", (c) => c.notNull())
    .addColumn("request_id", "text")
    .addCheckConstraint("capacity_ledger_units_check", sql`units >= 0`)
    .addCheckConstraint("capacity_ledger_interval_check", sql`valid_to is null or valid_to >= valid_from`)
    .addUniqueConstraint("capacity_ledger_request_key", ["license_id", "feature", "request_id"])
    .execute();
  await db.schema
    .createIndex("capacity_ledger_span_idx")
    .on("capacity_ledger")
    .columns(["license_id", "feature", "valid_from"])
    .execute();
  // At most one current row per entitlement.
  await sql`
    create unique index capacity_ledger_open_idx on capacity_ledger (license_id, feature) where valid_to is null
  `.execute(db);

  // Scale's first answer per request_id, returned again on a retry.
  await db.schema
    .createTable("capacity_requests")
    .addColumn("license_id", "text", (c) => c.notNull())
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("request_id", "text", (c) => c.notNull())
    .addColumn("response", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("capacity_requests_pkey", ["license_id", "feature", "request_id"])
    .execute();
  await db.schema.createIndex("capacity_requests_created_at_idx").on("capacity_requests").column("created_at").execute();

  // A change of units is a licence change: every replica reloads the licence's snapshot (which
  // reads capacity_state), so Check enforces the new units at once.
  await sql`
    create function capacity_notify_change() returns trigger language plpgsql as $$
    declare
      row record;
    begin
      if tg_op = 'DELETE' then row := old; else row := new; end if;
      perform pg_notify('licensing_changes', 'license:' || row.license_id);
      return null;
    end;
    $$
  `.execute(db);
  await sql`
    create trigger capacity_state_notify_change
    after insert or update or delete on capacity_state
    for each row execute function capacity_notify_change()
  `.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists capacity_state_notify_change on capacity_state`.execute(db);
  await sql`drop function if exists capacity_notify_change()`.execute(db);
  for (const table of ["capacity_requests", "capacity_ledger", "capacity_state"]) {
    await db.schema.dropTable(table).execute();
  }
}
