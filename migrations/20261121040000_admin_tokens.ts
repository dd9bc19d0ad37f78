/**
 * Account-scoped admin tokens: bearer tokens (lk_adm_...) that administer one account through
 * AdminService. Only the SHA-256 of the secret is stored, as for API keys.
 *
 * Frozen once landed: change the schema with a new migration, never by editing this one.
 * Typed `Kysely<any>` on purpose (a migration describes the database as it was at its time).
 * No change trigger: replicas cache a token's account for a few seconds (see
 * src/admin/account-tokens.ts), so a revocation reaches them without a notification.
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema, see above
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("admin_tokens")
    .addColumn("id", "text", (c) => c.primaryKey())
    // A pruned account takes its admin tokens with it.
    .addColumn("account_id", "text", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("prefix", "text", (c) => c.notNull())
    .addColumn("secret_hash", "text", (c) => c.notNull().unique())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("revoked_at", "timestamptz")
    .execute();
  await db.schema.createIndex("admin_tokens_account_id_idx").on("admin_tokens").column("account_id").execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- frozen-in-time schema, see above
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("admin_tokens").execute();
}
