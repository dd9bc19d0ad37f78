/**
 * Monthly partitions of `usage_events`, created ahead of time.
 *
 * A month is named by its UTC start, "YYYY-MM". `ensurePartitions` creates the missing
 * partitions of a range of months, once, safely across replicas (an advisory lock serializes
 * creators; an existing partition is left alone). If rows for a month already sit in the
 * DEFAULT partition (an event arrived before its month's partition existed), they are moved
 * into the new partition in the same transaction, because PostgreSQL refuses to create a
 * partition whose range the default partition already holds rows for.
 */
import { sql, type Kysely } from "kysely";
import type { Database } from "../store/schema.js";

/** A calendar month in UTC. `month` is 1..12. */
export interface Month {
  readonly year: number;
  readonly month: number;
}

/** Arbitrary but fixed key of the advisory lock that serializes partition creation. */
const PARTITION_LOCK_KEY = 4_732_001;

/** The UTC month containing `ms` (epoch ms). */
export function monthOf(ms: number): Month {
  const date = new Date(ms);
  return { year: date.getUTCFullYear(), month: date.getUTCMonth() + 1 };
}

/** `month` moved by `delta` months (negative goes back). */
export function addMonths(month: Month, delta: number): Month {
  const index = month.year * 12 + (month.month - 1) + delta;
  return { year: Math.floor(index / 12), month: (index % 12) + 1 };
}

/** Epoch ms of the month's first instant (UTC). */
export function monthStartMs(month: Month): number {
  return Date.UTC(month.year, month.month - 1, 1);
}

/** "2026-11". */
export function formatMonth(month: Month): string {
  return `${String(month.year).padStart(4, "0")}-${String(month.month).padStart(2, "0")}`;
}

/** Parses "YYYY-MM" (month 01..12); undefined when the text is not one. */
export function parseMonth(text: string): Month | undefined {
  const match = /^(\d{4})-(0[1-9]|1[0-2])$/.exec(text);
  if (match?.[1] === undefined || match[2] === undefined) return undefined;
  return { year: Number(match[1]), month: Number(match[2]) };
}

/** The partition's table name, e.g. usage_events_y2026m11. */
export function partitionName(month: Month): string {
  return `usage_events_y${String(month.year).padStart(4, "0")}m${String(month.month).padStart(2, "0")}`;
}

/**
 * Creates every missing monthly partition from `fromMonth` to `toMonth` inclusive; resolves
 * the names it created (empty when all existed). One transaction per created partition, so a
 * failure leaves the ones before it in place. Throws the database's error.
 */
export async function ensurePartitions(db: Kysely<Database>, fromMonth: Month, toMonth: Month): Promise<string[]> {
  const created: string[] = [];
  const existing = await existingPartitions(db);
  for (let month = fromMonth; monthStartMs(month) <= monthStartMs(toMonth); month = addMonths(month, 1)) {
    const name = partitionName(month);
    if (existing.has(name)) continue;
    if (await createPartition(db, month)) created.push(name);
  }
  return created;
}

async function existingPartitions(db: Kysely<Database>): Promise<Set<string>> {
  const { rows } = await sql<{ name: string }>`
    select c.relname as name
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    join pg_class p on p.oid = i.inhparent
    where p.relname = 'usage_events' and p.relnamespace = to_regnamespace(current_schema())::oid
  `.execute(db);
  return new Set(rows.map((r) => r.name));
}

/**
 * Creates one partition, moving rows the default partition holds for its range. Resolves false
 * when another replica created it first. 1 transaction, up to 7 statements.
 */
async function createPartition(db: Kysely<Database>, month: Month): Promise<boolean> {
  const name = partitionName(month);
  const from = new Date(monthStartMs(month)).toISOString();
  const to = new Date(monthStartMs(addMonths(month, 1))).toISOString();
  return db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${PARTITION_LOCK_KEY})`.execute(trx);
    const { rows } = await sql<{ exists: boolean }>`select to_regclass(${name}) is not null as exists`.execute(trx);
    if (rows[0]?.exists === true) return false;
    const table = sql.table(name);
    // A plain table first, filled from the default partition, then attached: attaching checks
    // that the default partition no longer holds rows of this range.
    await sql`create table ${table} (like usage_events including defaults including constraints)`.execute(trx);
    await sql`
      with moved as (
        delete from usage_events_default
        where occurred_at >= ${from}::timestamptz and occurred_at < ${to}::timestamptz
        returning *
      )
      insert into ${table} select * from moved
    `.execute(trx);
    await sql`
      alter table usage_events attach partition ${table}
      for values from (${sql.lit(from)}) to (${sql.lit(to)})
    `.execute(trx);
    return true;
  });
}
