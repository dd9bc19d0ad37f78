/**
 * Route rules: which feature (and cost) a proxied request uses, by method and path prefix, for
 * Envoy ext_authz and forward-auth when the proxy does not name the feature itself.
 *
 * Frozen once landed. SQL must run on PostgreSQL 15 and PGlite (PostgreSQL 17).
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("routes")
    .addColumn("id", "text", (c) => c.primaryKey())
    // Upper-case method, or "*" for any. (method, path_prefix) is unique within a rules
    // document; it is not a constraint here so an apply may rename a route in one transaction.
    .addColumn("method", "text", (c) => c.notNull().defaultTo("*"))
    .addColumn("path_prefix", "text", (c) => c.notNull())
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("cost", "bigint", (c) => c.notNull().defaultTo(1))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint("routes_cost_check", sql`cost >= 0`)
    .addCheckConstraint("routes_path_prefix_check", sql`path_prefix like '/%'`)
    .execute();
  await sql`
    create function licensing_notify_routes() returns trigger language plpgsql as $$
    begin
      perform pg_notify('licensing_changes', 'routes');
      return null;
    end;
    $$
  `.execute(db);
  await sql`
    create trigger routes_notify_change after insert or update or delete on routes
    for each statement execute function licensing_notify_routes()
  `.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists routes_notify_change on routes`.execute(db);
  await sql`drop function if exists licensing_notify_routes()`.execute(db);
  await db.schema.dropTable("routes").execute();
}
