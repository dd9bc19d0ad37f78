/**
 * How imperative admin writes (suspend, reinstate, renew, API keys) reach the database.
 *
 * Each runs in one transaction under the same advisory lock as a rules apply (src/rules/apply.ts),
 * so an apply never diffs against a half-made admin change, and bumps the licence's `version`
 * like an apply does: the licences trigger then NOTIFYs `license:<id>`, every replica drops its
 * cached snapshot, and the next Check's policy_version shows the change.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import type { Database } from "../store/schema.js";

/**
 * Must equal APPLY_LOCK_KEY in src/rules/apply.ts (not exported there): the key that means "the
 * licensing state is being written". test/admin/admin-writes.test.ts checks that an admin write
 * waits for a transaction holding it.
 */
export const RULES_WRITE_LOCK_KEY = 7_311_529_001;

/** Runs `write` in a transaction holding the rules write lock. */
export function adminWrite<T>(db: Kysely<Database>, write: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
  return db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${RULES_WRITE_LOCK_KEY})`.execute(trx);
    return write(trx);
  });
}

/** Grows the licence's version by one (and its updated_at), so caches everywhere drop it. */
export async function bumpLicenseVersion(trx: Transaction<Database>, licenseId: string, now: Date): Promise<void> {
  await trx.updateTable("licenses").set({ version: sql`version + 1`, updated_at: now }).where("id", "=", licenseId).execute();
}
