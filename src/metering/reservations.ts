/**
 * Reserve, then settle.
 *
 * A Check with a quantity and an operation_id consumes its units through the engine as usual;
 * the Check path also tells `ReservationWriter.record` (a memory enqueue), and the writer
 * records a reservation row in batches. A Report event with the same operation_id settles it:
 * actual < reserved releases the difference from the quota counter, actual > reserved consumes
 * the excess (overage when the entitlement allows it, otherwise still counted as used).
 *
 * Order-free: each side may land first. The row keeps `reserved`, `actual` and `applied` (net
 * units the settlement has moved in the counter). Every write sets `applied` to the target
 *   actual known      → actual - reserved (reserved missing counts 0)
 *   expired, no actual → -reserved (released)
 *   otherwise         → 0 (the Check's own consumption stands while the call runs)
 * and applies the difference (`last_change`) to the counter in the same transaction. Retries
 * move nothing (the target does not change).
 *
 * Expiry: a reservation with no Report after the TTL is released. A reservation is a hold, as
 * a card authorization is: what is billed is what the service reports it actually used; a
 * caller that never reports is visible (stats.reservationsExpired, a log line per sweep) rather
 * than billed for units it may not have used. A Report arriving after expiry still counts in
 * full (target actual - reserved, from -reserved).
 */
import { sql, type Kysely } from "kysely";
import { periodStartMs } from "../licensing/engine/period.js";
import type { LicenseSnapshot } from "../licensing/snapshot.js";
import { iso } from "../store/iso-time.js";
import type { Database } from "../store/schema.js";
import { applyQuotaDeltas, type QuotaDelta, type Shortfall } from "./quota-deltas.js";

/** The quota counter a usage moves. */
export interface QuotaTarget {
  readonly periodStartMs: number;
  readonly limit: number;
  readonly allowOverage: boolean;
}

/** The quota an entitlement set charges `feature` against at `atMs`, or null when none. */
export function quotaTargetOf(snapshot: LicenseSnapshot, feature: string, atMs: number): QuotaTarget | null {
  const rule = snapshot.entitlements.get(feature)?.find((r) => r.kind === "quota");
  if (rule === undefined) return null;
  return { periodStartMs: periodStartMs(rule.period, atMs), limit: rule.limit ?? 0, allowOverage: rule.overage === "allow_and_bill" };
}

export interface OperationKey {
  readonly licenseId: string;
  readonly feature: string;
  readonly operationId: string;
}

/** A Check's reservation, as the writer stores it. */
export interface ReservationRecord extends OperationKey {
  readonly reserved: number;
  readonly quota: QuotaTarget;
  /** When the Check consumed, epoch ms. */
  readonly atMs: number;
}

/** A Report's settlement of one operation (its events' quantities summed). */
export interface Settlement extends OperationKey {
  readonly actual: number;
  /** The event's quota period: used only when no reservation is known yet. */
  readonly quota: QuotaTarget;
}

interface ChangeRow {
  license_id: string;
  feature: string;
  operation_id: string;
  period_start: Date;
  quota_limit: number;
  allow_overage: boolean;
  last_change: number;
}

/**
 * Stores reservations (one upsert, rows sorted by key), applies what settlements already known
 * now imply, and records release shortfalls. Run inside a transaction (callers: the writer).
 */
export async function storeReservations(
  trx: Kysely<Database>,
  records: readonly ReservationRecord[],
  ttlMs: number,
): Promise<void> {
  const rows = sortByKey(records);
  if (rows.length === 0) return;
  const { rows: changes } = await sql<ChangeRow>`
    insert into usage_reservations as r
      (license_id, feature, operation_id, reserved, period_start, quota_limit, allow_overage, created_at, expires_at)
    select * from unnest(
      ${rows.map((r) => r.licenseId)}::text[], ${rows.map((r) => r.feature)}::text[], ${rows.map((r) => r.operationId)}::text[],
      ${rows.map((r) => r.reserved)}::int8[], ${rows.map((r) => iso(r.quota.periodStartMs))}::timestamptz[],
      ${rows.map((r) => r.quota.limit)}::int8[], ${rows.map((r) => r.quota.allowOverage)}::bool[],
      ${rows.map((r) => iso(r.atMs))}::timestamptz[], ${rows.map((r) => iso(r.atMs + ttlMs))}::timestamptz[]
    )
    on conflict (license_id, feature, operation_id) do update
    set reserved = excluded.reserved,
        period_start = excluded.period_start,
        quota_limit = excluded.quota_limit,
        allow_overage = excluded.allow_overage,
        expires_at = case when r.reserved is null then excluded.expires_at else r.expires_at end,
        applied = ${target(sql`r.actual`, sql`excluded.reserved`)},
        last_change = ${target(sql`r.actual`, sql`excluded.reserved`)} - r.applied
    returning license_id, feature, operation_id, period_start, quota_limit, allow_overage, last_change
  `.execute(trx);
  await applyChanges(trx, changes);
}

/**
 * Settles operations from a Report's new events; resolves nothing, applies the counter changes
 * and records shortfalls. Run inside the Report's transaction, after its events were claimed
 * (so a duplicate event never settles twice).
 */
export async function storeSettlements(
  trx: Kysely<Database>,
  settlements: readonly Settlement[],
  nowMs: number,
  ttlMs: number,
): Promise<void> {
  const rows = sortByKey(mergeSettlements(settlements));
  if (rows.length === 0) return;
  const { rows: changes } = await sql<ChangeRow>`
    insert into usage_reservations as r
      (license_id, feature, operation_id, actual, applied, last_change, period_start, quota_limit, allow_overage,
       created_at, expires_at, settled_at)
    select s.license_id, s.feature, s.operation_id, s.actual, s.actual, s.actual, s.period_start, s.lim, s.bill,
           ${iso(nowMs)}::timestamptz, ${iso(nowMs + ttlMs)}::timestamptz, ${iso(nowMs)}::timestamptz
    from unnest(
      ${rows.map((r) => r.licenseId)}::text[], ${rows.map((r) => r.feature)}::text[], ${rows.map((r) => r.operationId)}::text[],
      ${rows.map((r) => r.actual)}::int8[], ${rows.map((r) => iso(r.quota.periodStartMs))}::timestamptz[],
      ${rows.map((r) => r.quota.limit)}::int8[], ${rows.map((r) => r.quota.allowOverage)}::bool[]
    ) as s(license_id, feature, operation_id, actual, period_start, lim, bill)
    on conflict (license_id, feature, operation_id) do update
    set actual = coalesce(r.actual, 0) + excluded.actual,
        applied = coalesce(r.actual, 0) + excluded.actual - coalesce(r.reserved, 0),
        last_change = coalesce(r.actual, 0) + excluded.actual - coalesce(r.reserved, 0) - r.applied,
        settled_at = coalesce(r.settled_at, excluded.settled_at)
    returning license_id, feature, operation_id, period_start, quota_limit, allow_overage, last_change
  `.execute(trx);
  await applyChanges(trx, changes);
}

/**
 * Releases reservations whose TTL passed without a Report (at most `limit` per call; rows
 * another replica is sweeping are skipped). Resolves how many expired. 1 transaction.
 */
export async function expireReservations(db: Kysely<Database>, nowMs: number, limit: number): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { rows: changes } = await sql<ChangeRow>`
      with due as (
        select license_id, feature, operation_id from usage_reservations
        where actual is null and expired_at is null and expires_at <= ${iso(nowMs)}::timestamptz
        order by license_id, feature, operation_id
        limit ${limit}
        for update skip locked
      )
      update usage_reservations r
      set expired_at = ${iso(nowMs)}::timestamptz,
          applied = -coalesce(r.reserved, 0),
          last_change = -coalesce(r.reserved, 0) - r.applied
      from due
      where r.license_id = due.license_id and r.feature = due.feature and r.operation_id = due.operation_id
      returning r.license_id, r.feature, r.operation_id, r.period_start, r.quota_limit, r.allow_overage, r.last_change
    `.execute(trx);
    await applyChanges(trx, changes);
    return changes.length;
  });
}

/**
 * Retries releases that found too few units in the counter (at most `limit` rows per call).
 * Resolves the units still owed afterwards. 1 transaction.
 */
export async function retryPendingReleases(db: Kysely<Database>, limit: number): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<ChangeRow & { pending: number }>`
      with due as (
        select license_id, feature, operation_id, pending_release from usage_reservations
        where pending_release > 0
        order by license_id, feature, operation_id
        limit ${limit}
        for update skip locked
      )
      update usage_reservations r set pending_release = 0
      from due
      where r.license_id = due.license_id and r.feature = due.feature and r.operation_id = due.operation_id
      returning r.license_id, r.feature, r.operation_id, r.period_start, r.quota_limit, r.allow_overage,
                -due.pending_release as last_change
    `.execute(trx);
    return applyChanges(trx, rows);
  });
}

/** Applies the rows' last_change to their counters and stores release shortfalls; resolves units owed. */
async function applyChanges(trx: Kysely<Database>, changes: readonly ChangeRow[]): Promise<number> {
  const moving = changes.filter((c) => c.last_change !== 0);
  if (moving.length === 0) return 0;
  const deltas: QuotaDelta[] = moving.map((c) => ({
    licenseId: c.license_id,
    feature: c.feature,
    periodStartMs: c.period_start.getTime(),
    delta: c.last_change,
    limit: c.quota_limit,
    allowOverage: c.allow_overage,
  }));
  const shortfalls = await applyQuotaDeltas(trx, deltas);
  const owed = distributeShortfalls(moving, shortfalls);
  if (owed.length === 0) return 0;
  await sql`
    update usage_reservations r set pending_release = r.pending_release + o.units
    from unnest(
      ${owed.map((o) => o.licenseId)}::text[], ${owed.map((o) => o.feature)}::text[],
      ${owed.map((o) => o.operationId)}::text[], ${owed.map((o) => o.units)}::int8[]
    ) as o(license_id, feature, operation_id, units)
    where r.license_id = o.license_id and r.feature = o.feature and r.operation_id = o.operation_id
  `.execute(trx);
  return owed.reduce((sum, o) => sum + o.units, 0);
}

/**
 * A counter's shortfall belongs to the releases that moved it; each takes at most its own
 * release, in row order. (Deltas were merged per counter, so a consumption in the same batch
 * already offset part of the releases before the shortfall was measured.)
 */
function distributeShortfalls(changes: readonly ChangeRow[], shortfalls: readonly Shortfall[]): Array<OperationKey & { units: number }> {
  const owed: Array<OperationKey & { units: number }> = [];
  for (const s of shortfalls) {
    let left = s.units;
    for (const c of changes) {
      if (left <= 0) break;
      if (c.last_change >= 0 || c.license_id !== s.licenseId || c.feature !== s.feature || c.period_start.getTime() !== s.periodStartMs) continue;
      const units = Math.min(left, -c.last_change);
      owed.push({ licenseId: c.license_id, feature: c.feature, operationId: c.operation_id, units });
      left -= units;
    }
  }
  return owed;
}

/** The `applied` target with `actual` and `reserved` as SQL expressions of the new row. */
function target(actual: ReturnType<typeof sql>, reserved: ReturnType<typeof sql>) {
  return sql`(case when ${actual} is not null then ${actual} - coalesce(${reserved}, 0)
                   when r.expired_at is not null then -coalesce(${reserved}, 0)
                   else 0 end)`;
}

function mergeSettlements(settlements: readonly Settlement[]): Settlement[] {
  const byKey = new Map<string, Settlement>();
  for (const s of settlements) {
    const key = keyOf(s);
    const seen = byKey.get(key);
    byKey.set(key, seen === undefined ? s : { ...seen, actual: seen.actual + s.actual });
  }
  return [...byKey.values()];
}

/** Last record per key wins (a retried Check records the same reservation again). */
function sortByKey<T extends OperationKey>(rows: readonly T[]): T[] {
  const byKey = new Map<string, T>();
  for (const row of rows) byKey.set(keyOf(row), row);
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, row]) => row);
}

function keyOf(key: OperationKey): string {
  return `${key.licenseId}\u0000${key.feature}\u0000${key.operationId}`;
}
