/**
 * Reported usage and reservation settlements, applied to `quota_counters` so the engine's next
 * lease sees them (coordination through the database only: every replica's lease statement
 * computes what is left from the row).
 *
 * Consuming `n` units:
 * - `allow_and_bill`: what still fits under the limit (limit - used - leased - stranded) goes
 *   to `used`, the rest to `overage`, exactly as fail-open settlement does, so the engine's
 *   invariant `used + leased + stranded <= limit` holds;
 * - `block`: all of it goes to `used`, even past the limit: the usage happened and is counted.
 *   `used` may then exceed the limit; the lease statement grants GREATEST(0, limit - ...) = 0
 *   and the engine's views clamp at 0, so nothing goes negative and no more is granted.
 *
 * Releasing `n` units takes from `overage` first (the units past the limit), then from `used`,
 * never below 0; what could not be taken (the Check's consumption is still in a replica's
 * memory, not yet settled into the row) is the shortfall, returned to the caller to retry later.
 */
import { sql, type Kysely } from "kysely";
import { iso } from "../store/iso-time.js";
import type { Database } from "../store/schema.js";

/** One counter's change. */
export interface QuotaDelta {
  readonly licenseId: string;
  readonly feature: string;
  /** UTC start of the quota period, epoch ms. */
  readonly periodStartMs: number;
  /** Units to consume (> 0) or release (< 0). */
  readonly delta: number;
  readonly limit: number;
  readonly allowOverage: boolean;
}

export interface Shortfall {
  readonly licenseId: string;
  readonly feature: string;
  readonly periodStartMs: number;
  /** Units of a release that could not be taken. */
  readonly units: number;
}

/** One counter's summed change: exact, as a sum of many deltas may pass 2^53. */
export interface MergedDelta extends Omit<QuotaDelta, "delta"> {
  readonly delta: bigint;
}

/**
 * Deltas merged per counter, in key order; zero sums dropped. Summed as BigInt: each delta is a
 * safe integer, but a batch's sum need not be, and a rounded sum would bill the wrong amount.
 */
export function mergeDeltas(deltas: readonly QuotaDelta[]): MergedDelta[] {
  const byKey = new Map<string, { readonly first: QuotaDelta; sum: bigint }>();
  for (const d of deltas) {
    const key = `${d.licenseId}\u0000${d.feature}\u0000${d.periodStartMs}`;
    const seen = byKey.get(key);
    if (seen === undefined) byKey.set(key, { first: d, sum: BigInt(d.delta) });
    else seen.sum += BigInt(d.delta);
  }
  return [...byKey.values()]
    .filter(({ sum }) => sum !== 0n)
    .map(({ first, sum }) => ({ ...first, delta: sum }))
    .sort((a, b) => compare(a.licenseId, b.licenseId) || compare(a.feature, b.feature) || a.periodStartMs - b.periodStartMs);
}

/**
 * Applies the deltas in one statement: locks the touched counter rows in key order (so
 * concurrent writers and the engine's settlement cannot deadlock), computes each change from
 * the locked row, creates missing rows. Counters of licences that no longer exist are skipped
 * (the events stay recorded). Resolves the release shortfalls. 1 statement.
 */
export async function applyQuotaDeltas(db: Kysely<Database>, deltas: readonly QuotaDelta[]): Promise<Shortfall[]> {
  const rows = mergeDeltas(deltas);
  if (rows.length === 0) return [];
  const { rows: short } = await sql<{ license_id: string; feature: string; period_start: Date; units: number }>`
    with d as (
      select * from unnest(
        ${rows.map((r) => r.licenseId)}::text[], ${rows.map((r) => r.feature)}::text[],
        ${rows.map((r) => iso(r.periodStartMs))}::timestamptz[], ${rows.map((r) => r.delta.toString())}::int8[],
        ${rows.map((r) => r.limit)}::int8[], ${rows.map((r) => r.allowOverage)}::bool[]
      ) as d(license_id, feature, period_start, delta, lim, bill)
    ),
    locked as (
      select q.license_id, q.feature, q.period_start, q.used, q.overage, q.leased + q.stranded as held
      from quota_counters q join d using (license_id, feature, period_start)
      order by q.license_id, q.feature, q.period_start
      for update of q
    ),
    cur as (
      select d.*, coalesce(l.used, 0) as used, coalesce(l.overage, 0) as overage, coalesce(l.held, 0) as held,
             least(greatest(d.delta, 0), greatest(0, d.lim - coalesce(l.used, 0) - coalesce(l.held, 0))) as fits
      from d left join locked l using (license_id, feature, period_start)
    ),
    x as (
      select license_id, feature, period_start, delta,
             case when delta <= 0 then 0 when bill then fits else delta end as add_used,
             case when delta > 0 and bill then delta - fits else 0 end as add_over,
             case when delta < 0 then least(overage, -delta) else 0 end as rel_over,
             case when delta < 0 then least(used, -delta - least(overage, -delta)) else 0 end as rel_used
      from cur
    ),
    -- Releases only touch rows that exist (locked above); consumption inserts or adds. A key
    -- is one or the other (deltas are merged), so no row is modified twice.
    released as (
      update quota_counters q
      set used = q.used - x.rel_used, overage = q.overage - x.rel_over, updated_at = now()
      from x
      where q.license_id = x.license_id and q.feature = x.feature and q.period_start = x.period_start
        and x.rel_used + x.rel_over > 0
      returning 1
    ),
    consumed as (
      insert into quota_counters as q (license_id, feature, period_start, used, overage)
      select license_id, feature, period_start, add_used, add_over
      from x
      where add_used + add_over > 0
        and exists (select 1 from licenses l where l.id = x.license_id)
      order by license_id, feature, period_start
      on conflict (license_id, feature, period_start) do update
      set used = q.used + excluded.used, overage = q.overage + excluded.overage, updated_at = now()
      returning 1
    )
    -- Both CTEs above run to completion whether or not this select reads them.
    select license_id, feature, period_start, (-delta - rel_over - rel_used)::int8 as units
    from x
    where delta < 0 and -delta - rel_over - rel_used > 0
  `.execute(db);
  return short.map((r) => ({ licenseId: r.license_id, feature: r.feature, periodStartMs: r.period_start.getTime(), units: r.units }));
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
