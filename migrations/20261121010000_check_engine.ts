/**
 * The Check engine's state: replicas, quota counters and leases, seat leases, the decision log,
 * identity-provider issuers, service tokens, licence-token signing keys, and the triggers that
 * tell every replica what changed (NOTIFY licensing_changes).
 *
 * Frozen once landed. SQL must run on PostgreSQL 15 and PGlite (PostgreSQL 17).
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function up(db: Kysely<any>): Promise<void> {
  // Live replicas heartbeat here; rate limits are shared among the live ones.
  await db.schema
    .createTable("replicas")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("started_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("heartbeat_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .execute();

  // Quota state per licence, feature and period. Invariant: used + leased + stranded <= limit
  // for blocking entitlements; `overage` counts units allowed past the limit (allow_and_bill).
  await db.schema
    .createTable("quota_counters")
    .addColumn("license_id", "text", (c) => c.notNull().references("licenses.id").onDelete("cascade"))
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("period_start", "timestamptz", (c) => c.notNull())
    .addColumn("used", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("leased", "bigint", (c) => c.notNull().defaultTo(0))
    // Units of leases whose replica vanished: neither known used nor safe to grant again.
    .addColumn("stranded", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("overage", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("quota_counters_pkey", ["license_id", "feature", "period_start"])
    .addCheckConstraint(
      "quota_counters_nonnegative_check",
      sql`used >= 0 and leased >= 0 and stranded >= 0 and overage >= 0`,
    )
    .execute();

  // Blocks of quota a replica holds and spends from memory.
  await db.schema
    .createTable("quota_leases")
    .addColumn("replica_id", "text", (c) => c.notNull())
    .addColumn("license_id", "text", (c) => c.notNull())
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("period_start", "timestamptz", (c) => c.notNull())
    .addColumn("amount", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("quota_leases_pkey", ["replica_id", "license_id", "feature", "period_start"])
    .addForeignKeyConstraint(
      "quota_leases_counter_fkey",
      ["license_id", "feature", "period_start"],
      "quota_counters",
      ["license_id", "feature", "period_start"],
      (fk) => fk.onDelete("cascade"),
    )
    .addCheckConstraint("quota_leases_amount_check", sql`amount >= 0`)
    .execute();
  await db.schema.createIndex("quota_leases_expires_at_idx").on("quota_leases").column("expires_at").execute();

  // Floating seats and capacity units: one row per instance holding one, renewed by heartbeat.
  await db.schema
    .createTable("seat_leases")
    .addColumn("license_id", "text", (c) => c.notNull().references("licenses.id").onDelete("cascade"))
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("instance_id", "text", (c) => c.notNull())
    .addColumn("replica_id", "text", (c) => c.notNull())
    .addColumn("acquired_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("seat_leases_pkey", ["license_id", "feature", "instance_id"])
    .execute();
  await db.schema.createIndex("seat_leases_expires_at_idx").on("seat_leases").column("expires_at").execute();

  // Every decision, hash-chained per replica: hash = sha256(prev_hash || canonical row).
  // Allowed decisions may be one row per second, licence, feature and replica with `count`.
  await db.schema
    .createTable("decision_log")
    .addColumn("replica_id", "text", (c) => c.notNull())
    .addColumn("seq", "bigint", (c) => c.notNull())
    .addColumn("decision_id", "text")
    .addColumn("time", "timestamptz", (c) => c.notNull())
    .addColumn("license_id", "text")
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("decision", "text", (c) => c.notNull())
    .addColumn("reason", "text", (c) => c.notNull())
    .addColumn("quantity", "bigint", (c) => c.notNull())
    .addColumn("count", "integer", (c) => c.notNull().defaultTo(1))
    .addColumn("prev_hash", "text", (c) => c.notNull())
    .addColumn("hash", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("decision_log_pkey", ["replica_id", "seq"])
    .addCheckConstraint("decision_log_decision_check", sql`decision in ('allow', 'deny')`)
    .execute();
  await db.schema.createIndex("decision_log_license_time_idx").on("decision_log").columns(["license_id", "time"]).execute();
  await db.schema.createIndex("decision_log_time_idx").on("decision_log").column("time").execute();

  // Customers' identity providers whose JWTs Check accepts.
  await db.schema
    .createTable("issuers")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("issuer", "text", (c) => c.notNull().unique())
    .addColumn("jwks_url", "text", (c) => c.notNull())
    .addColumn("audiences", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn("algorithms", sql`text[]`, (c) => c.notNull())
    .addColumn("leeway_seconds", "integer", (c) => c.notNull().defaultTo(60))
    .addColumn("license_claim", "text")
    .addColumn("account_claim", "text")
    .addColumn("roles_claim", "text", (c) => c.notNull().defaultTo("roles"))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint("issuers_subject_check", sql`(license_claim is null) <> (account_claim is null)`)
    .execute();

  // Trusted internal callers (e.g. a billing service) that may name a licence directly.
  await db.schema
    .createTable("service_tokens")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("prefix", "text", (c) => c.notNull())
    .addColumn("secret_hash", "text", (c) => c.notNull().unique())
    .addColumn("rights", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn("expires_at", "timestamptz")
    .addColumn("revoked_at", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Ed25519 keys that sign licence tokens. The private key is stored encrypted (AES-256-GCM
  // under a key-encryption key the service is configured with); the public JWK is served at
  // /.well-known/jwks.json while the key is not retired, so rotation overlaps.
  await db.schema
    .createTable("signing_keys")
    .addColumn("kid", "text", (c) => c.primaryKey())
    .addColumn("algorithm", "text", (c) => c.notNull().defaultTo("EdDSA"))
    .addColumn("public_jwk", "jsonb", (c) => c.notNull())
    .addColumn("private_key_encrypted", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("activated_at", "timestamptz")
    .addColumn("retired_at", "timestamptz")
    .execute();

  // Change notification: every replica LISTENs on licensing_changes and drops what a payload
  // names: "license:<id>", "plan:<name>", "key:<secret_hash>", "service_token:<secret_hash>",
  // "issuers", "signing_keys".
  await sql`
    create function licensing_notify_change() returns trigger language plpgsql as $$
    declare
      row record;
    begin
      if tg_op = 'DELETE' then row := old; else row := new; end if;
      if tg_table_name = 'licenses' then
        perform pg_notify('licensing_changes', 'license:' || row.id);
      elsif tg_table_name = 'entitlements' then
        if row.license_id is not null then
          perform pg_notify('licensing_changes', 'license:' || row.license_id);
        else
          perform pg_notify('licensing_changes', 'plan:' || row.plan);
        end if;
      elsif tg_table_name = 'api_keys' then
        perform pg_notify('licensing_changes', 'key:' || row.secret_hash);
        perform pg_notify('licensing_changes', 'license:' || row.license_id);
      elsif tg_table_name = 'service_tokens' then
        perform pg_notify('licensing_changes', 'service_token:' || row.secret_hash);
      elsif tg_table_name = 'issuers' then
        perform pg_notify('licensing_changes', 'issuers');
      elsif tg_table_name = 'signing_keys' then
        perform pg_notify('licensing_changes', 'signing_keys');
      end if;
      return null;
    end;
    $$
  `.execute(db);
  for (const table of ["licenses", "entitlements", "api_keys", "service_tokens", "issuers", "signing_keys"]) {
    await sql`
      create trigger ${sql.raw(`${table}_notify_change`)}
      after insert or update or delete on ${sql.table(table)}
      for each row execute function licensing_notify_change()
    `.execute(db);
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema
export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ["licenses", "entitlements", "api_keys", "service_tokens", "issuers", "signing_keys"]) {
    await sql`drop trigger if exists ${sql.raw(`${table}_notify_change`)} on ${sql.table(table)}`.execute(db);
  }
  await sql`drop function if exists licensing_notify_change()`.execute(db);
  for (const table of [
    "signing_keys",
    "service_tokens",
    "issuers",
    "decision_log",
    "seat_leases",
    "quota_leases",
    "quota_counters",
    "replicas",
  ]) {
    await db.schema.dropTable(table).execute();
  }
}
