/**
 * Foundation: accounts, plans, licences, entitlements and API keys.
 *
 * Frozen once landed: change the schema with a new migration, never by editing this one.
 * Typed `Kysely<any>` on purpose: a migration describes the database as it was at its time,
 * not as today's `Database` interface says. SQL here must run on PostgreSQL 15 and on PGlite
 * (PostgreSQL 17).
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema, see above
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("accounts")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("plans")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("description", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("licenses")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("account_id", "text", (c) => c.notNull().references("accounts.id").onDelete("restrict"))
    .addColumn("plan", "text", (c) => c.notNull().references("plans.name").onDelete("restrict"))
    .addColumn("status", "text", (c) => c.notNull().defaultTo("active"))
    .addColumn("valid_from", "timestamptz")
    .addColumn("valid_until", "timestamptz")
    .addColumn("environments", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn("version", "bigint", (c) => c.notNull().defaultTo(1))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint("licenses_status_check", sql`status in ('active', 'suspended')`)
    .addCheckConstraint(
      "licenses_validity_check",
      sql`valid_from is null or valid_until is null or valid_from < valid_until`,
    )
    .execute();
  await db.schema.createIndex("licenses_account_id_idx").on("licenses").column("account_id").execute();
  await db.schema.createIndex("licenses_plan_idx").on("licenses").column("plan").execute();

  await db.schema
    .createTable("entitlements")
    .addColumn("id", "bigint", (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn("plan", "text", (c) => c.references("plans.name").onDelete("cascade"))
    .addColumn("license_id", "text", (c) => c.references("licenses.id").onDelete("cascade"))
    .addColumn("feature", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("limit", "bigint")
    .addColumn("period", "text")
    .addColumn("burst", "bigint")
    .addColumn("overage", "text", (c) => c.notNull().defaultTo("block"))
    .addColumn("failure_mode", "text", (c) => c.notNull().defaultTo("fail_closed"))
    .addColumn("roles", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn("unit_price", "bigint")
    .addColumn("scaling", "jsonb")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint("entitlements_owner_check", sql`(plan is null) <> (license_id is null)`)
    .addCheckConstraint(
      "entitlements_kind_check",
      sql`kind in ('boolean', 'quota', 'rate', 'seats', 'capacity')`,
    )
    .addCheckConstraint(
      "entitlements_period_check",
      sql`period is null or period in ('second', 'minute', 'hour', 'day', 'month', 'lifetime')`,
    )
    .addCheckConstraint("entitlements_overage_check", sql`overage in ('block', 'allow_and_bill')`)
    .addCheckConstraint(
      "entitlements_failure_mode_check",
      sql`failure_mode in ('fail_closed', 'fail_open')`,
    )
    .addCheckConstraint("entitlements_limit_check", sql`"limit" is null or "limit" >= 0`)
    // A feature may carry several limits (a quota and a rate), one of each kind.
    .addUniqueConstraint("entitlements_plan_feature_kind_key", ["plan", "feature", "kind"])
    .addUniqueConstraint("entitlements_license_feature_kind_key", ["license_id", "feature", "kind"])
    .execute();

  await db.schema
    .createTable("api_keys")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("license_id", "text", (c) => c.notNull().references("licenses.id").onDelete("cascade"))
    .addColumn("prefix", "text", (c) => c.notNull())
    .addColumn("secret_hash", "text", (c) => c.notNull().unique())
    .addColumn("scopes", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn("expires_at", "timestamptz")
    .addColumn("revoked_at", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex("api_keys_license_id_idx").on("api_keys").column("license_id").execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema, see above
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("api_keys").execute();
  await db.schema.dropTable("entitlements").execute();
  await db.schema.dropTable("licenses").execute();
  await db.schema.dropTable("plans").execute();
  await db.schema.dropTable("accounts").execute();
}
