/**
 * Usage metering: the idempotency ids of every reported event, the events themselves
 * (partitioned by month of occurred_at), reservations made by Checks and settled by Reports,
 * and the frozen statements of closed billing periods.
 *
 * Why two tables for events: PostgreSQL requires a partitioned table's unique constraints to
 * include the partition key, so `usage_events` cannot enforce "id is unique forever" by itself
 * (the same id with another occurred_at would land in another partition). `usage_event_ids` is
 * small, unpartitioned, and keyed by id alone; the service claims ids there with
 * INSERT ... ON CONFLICT DO NOTHING RETURNING in the same statement that inserts the claimed
 * events into `usage_events`, so an event exists in `usage_events` iff its id was claimed, once.
 *
 * Partitions are created by the service ahead of time (src/metering/partitions.ts); the DEFAULT
 * partition catches any month nobody created, so an insert never fails for want of one.
 *
 * Frozen once landed. SQL must run on PostgreSQL 15 and PGlite (PostgreSQL 17).
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("usage_event_ids")
    .addColumn("id", "text", (c) => c.primaryKey())
    // Where the event lives: with it, a duplicate can be traced to its partition.
    .addColumn("occurred_at", "timestamptz", (c) => c.notNull())
    .execute();

  // No foreign key to licenses: usage is a billing record and outlives a deleted licence. No
  // primary key either: usage_event_ids is the uniqueness guard, and one index fewer keeps
  // ingest fast.
  await sql`
    create table usage_events (
      id text not null,
      license_id text not null,
      feature text not null,
      quantity bigint not null,
      occurred_at timestamptz not null,
      received_at timestamptz not null,
      attributes jsonb not null default '{}'::jsonb,
      operation_id text,
      constraint usage_events_quantity_check check (quantity >= 0)
    ) partition by range (occurred_at)
  `.execute(db);
  await sql`create table usage_events_default partition of usage_events default`.execute(db);
  await sql`create index usage_events_license_time_idx on usage_events (license_id, occurred_at)`.execute(db);

  // One row per (licence, feature, operation): the Check side writes `reserved`, the Report side
  // adds to `actual`. `applied` is the net number of units the settlement has added to (+) or
  // released from (-) quota_counters so far; every writer moves it to the current target and
  // applies the difference, so the two sides may arrive in either order, and retries are no-ops.
  await db.schema
    .createTable("usage_reservations")
    .addColumn("license_id", "text", (c) => c.notNull())
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("operation_id", "text", (c) => c.notNull())
    // Units the Check consumed; null until the Check side's record lands.
    .addColumn("reserved", "bigint")
    // Units reported with this operation_id; null until a Report settles it.
    .addColumn("actual", "bigint")
    .addColumn("applied", "bigint", (c) => c.notNull().defaultTo(0))
    // What the last write changed `applied` by: RETURNING sees only new values, so each writer
    // records its own difference here and applies exactly that to the counter.
    .addColumn("last_change", "bigint", (c) => c.notNull().defaultTo(0))
    // Units a release could not take yet (the Check's consumption was not settled into the
    // counter yet); the sweeper retries them.
    .addColumn("pending_release", "bigint", (c) => c.notNull().defaultTo(0))
    // The quota counter the settlement moves: the Check's period when known.
    .addColumn("period_start", "timestamptz", (c) => c.notNull())
    .addColumn("quota_limit", "bigint", (c) => c.notNull())
    .addColumn("allow_overage", "boolean", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull())
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .addColumn("settled_at", "timestamptz")
    .addColumn("expired_at", "timestamptz")
    .addPrimaryKeyConstraint("usage_reservations_pkey", ["license_id", "feature", "operation_id"])
    .addCheckConstraint(
      "usage_reservations_nonnegative_check",
      sql`(reserved is null or reserved >= 0) and (actual is null or actual >= 0) and pending_release >= 0`,
    )
    .execute();
  // The sweeper's two questions: which reservations are due to expire, which owe a release.
  await sql`
    create index usage_reservations_due_idx on usage_reservations (expires_at)
    where actual is null and expired_at is null
  `.execute(db);
  await sql`
    create index usage_reservations_pending_idx on usage_reservations (license_id)
    where pending_release > 0
  `.execute(db);

  // The statement of a closed period, computed once and never again.
  await db.schema
    .createTable("usage_statements")
    .addColumn("license_id", "text", (c) => c.notNull())
    // "2026-11"
    .addColumn("period", "text", (c) => c.notNull())
    .addColumn("computed_at", "timestamptz", (c) => c.notNull())
    // The statement as computed (integers as decimal strings, never floats).
    .addColumn("statement", "jsonb", (c) => c.notNull())
    .addPrimaryKeyConstraint("usage_statements_pkey", ["license_id", "period"])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("usage_statements").execute();
  await db.schema.dropTable("usage_reservations").execute();
  // Drops every partition with it.
  await sql`drop table usage_events`.execute(db);
  await db.schema.dropTable("usage_event_ids").execute();
}
