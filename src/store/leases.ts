/**
 * Quota counters, quota leases and seat leases: the statements behind the counting engine.
 * Each function takes the database (or a transaction) first and sends the number of
 * statements its comment states; none of them retries.
 *
 * Invariants kept by every statement here (per licence, feature and period):
 * - `leased` equals the sum of the period's `quota_leases.amount`;
 * - a unit is granted to a lease only while `used + leased + stranded < limit`, so blocking
 *   quotas never admit more than the limit, whatever the number of replicas;
 * - at most `limit` live (`expires_at > now`) seat leases exist per licence and feature.
 *
 * Times are passed as epoch ms and sent as ISO strings (UTC), so both drivers bind them alike.
 */
import { sql, type Kysely } from "kysely";
import { iso } from "./iso-time.js";
import type { Database } from "./schema.js";

/** One quota counter row: a licence's feature in one period. */
export interface CounterKey {
  readonly licenseId: string;
  readonly feature: string;
  /** UTC start of the period, epoch ms (0 for lifetime quotas). */
  readonly periodStartMs: number;
}

/** Creates the counter row if it is missing (1 statement). */
export async function ensureQuotaCounter(db: Kysely<Database>, key: CounterKey): Promise<void> {
  await sql`
    insert into quota_counters (license_id, feature, period_start)
    values (${key.licenseId}, ${key.feature}, ${iso(key.periodStartMs)}::timestamptz)
    on conflict (license_id, feature, period_start) do nothing
  `.execute(db);
}

export interface LeaseRequest extends CounterKey {
  readonly replicaId: string;
  /** Units asked for; the grant is the largest n <= amount that fits under the limit. */
  readonly amount: number;
  readonly limit: number;
  /** The lease row's new expiry (it never moves back), epoch ms. */
  readonly expiresAtMs: number;
}

export interface LeaseGrant {
  readonly granted: number;
  /** The counter after the grant. */
  readonly used: number;
  readonly leased: number;
  readonly stranded: number;
}

/**
 * Leases up to `amount` units in one atomic statement: locks the counter row, grants
 * LEAST(amount, limit - used - leased - stranded) (0 when nothing is left), adds it to the
 * counter's `leased` and to this replica's lease row. Resolves undefined when the counter row
 * does not exist yet (call `ensureQuotaCounter`, then again). 1 statement.
 */
export async function leaseQuota(db: Kysely<Database>, request: LeaseRequest): Promise<LeaseGrant | undefined> {
  const periodStart = iso(request.periodStartMs);
  const { rows } = await sql<LeaseGrant>`
    with cur as (
      select used, leased, stranded,
             least(${request.amount}::int8, greatest(0, ${request.limit}::int8 - used - leased - stranded)) as granted
      from quota_counters
      where license_id = ${request.licenseId} and feature = ${request.feature}
        and period_start = ${periodStart}::timestamptz
      for update
    ),
    counter as (
      update quota_counters q
      set leased = q.leased + cur.granted, updated_at = now()
      from cur
      where q.license_id = ${request.licenseId} and q.feature = ${request.feature}
        and q.period_start = ${periodStart}::timestamptz and cur.granted > 0
      returning q.leased
    ),
    lease as (
      insert into quota_leases (replica_id, license_id, feature, period_start, amount, expires_at)
      select ${request.replicaId}, ${request.licenseId}, ${request.feature}, ${periodStart}::timestamptz,
             cur.granted, ${iso(request.expiresAtMs)}::timestamptz
      from cur where cur.granted > 0
      on conflict (replica_id, license_id, feature, period_start) do update
      set amount = quota_leases.amount + excluded.amount,
          expires_at = greatest(quota_leases.expires_at, excluded.expires_at)
      returning amount
    )
    select cur.granted, cur.used, cur.leased + cur.granted as leased, cur.stranded from cur
  `.execute(db);
  return rows[0];
}

/** What one replica settles for one counter; every field >= 0, at least one > 0. */
export interface SettleRow extends CounterKey {
  /** Units spent from the lease: move from `leased` to `used`. */
  readonly consumed: number;
  /** Unused lease units given back: leave `leased`. */
  readonly returned: number;
  /** Units allowed past the limit (allow_and_bill): add to `overage`. */
  readonly overage: number;
}

export interface SettleResult {
  /** Units added to `used`. */
  readonly consumed: number;
  /** Units the lease rows gave back (at most what was asked: a vanished row gives none). */
  readonly returned: number;
  readonly overage: number;
}

/**
 * Settles a batch of counters for one replica in one statement, and extends the touched lease
 * rows to `leaseExpiresAtMs`. Rows must have distinct keys.
 *
 * The lease row gives what it still holds: `take = LEAST(consumed + returned, amount)`. Normally
 * that is everything. If the row was swept (this replica was taken for dead) or holds less,
 * consumed units beyond `take` were counted in `stranded` by the sweeper; they move from
 * `stranded` to `used`, since now they are known used. Returned units beyond `take` stay
 * stranded. So a late settlement never lowers `leased` below the sum of the lease rows, and no
 * unit becomes grantable twice. 1 statement.
 */
export async function settleQuotas(
  db: Kysely<Database>,
  replicaId: string,
  rows: readonly SettleRow[],
  leaseExpiresAtMs: number,
): Promise<SettleResult> {
  if (rows.length === 0) return { consumed: 0, returned: 0, overage: 0 };
  const { rows: result } = await sql<{ consumed: number; returned: number; overage: number }>`
    with v as (
      select * from unnest(
        ${rows.map((r) => r.licenseId)}::text[], ${rows.map((r) => r.feature)}::text[],
        ${rows.map((r) => iso(r.periodStartMs))}::timestamptz[], ${rows.map((r) => r.consumed)}::int8[],
        ${rows.map((r) => r.returned)}::int8[], ${rows.map((r) => r.overage)}::int8[]
      ) as v(license_id, feature, period_start, consumed, returned, overage)
    ),
    cur as (
      select v.*, least(v.consumed + v.returned, coalesce(ql.amount, 0)) as take
      from v left join quota_leases ql
        on ql.replica_id = ${replicaId} and ql.license_id = v.license_id
       and ql.feature = v.feature and ql.period_start = v.period_start
    ),
    lease as (
      update quota_leases ql
      set amount = ql.amount - cur.take, expires_at = greatest(ql.expires_at, ${iso(leaseExpiresAtMs)}::timestamptz)
      from cur
      where ql.replica_id = ${replicaId} and ql.license_id = cur.license_id
        and ql.feature = cur.feature and ql.period_start = cur.period_start
      returning ql.license_id, ql.feature, ql.period_start, cur.take
    ),
    settled as (
      select cur.license_id, cur.feature, cur.period_start, cur.consumed, cur.overage,
             coalesce(lease.take, 0) as take,
             cur.consumed - least(cur.consumed, coalesce(lease.take, 0)) as from_stranded
      from cur left join lease using (license_id, feature, period_start)
    ),
    counter as (
      insert into quota_counters as q (license_id, feature, period_start, used, overage)
      select license_id, feature, period_start, consumed, overage from settled
      -- Counter rows are locked in key order, so two replicas' batches cannot deadlock.
      order by license_id, feature, period_start
      on conflict (license_id, feature, period_start) do update
      set used = q.used + excluded.used,
          overage = q.overage + excluded.overage,
          leased = q.leased - (select s.take from settled s where s.license_id = excluded.license_id
                                 and s.feature = excluded.feature and s.period_start = excluded.period_start),
          stranded = q.stranded - least(q.stranded, (select s.from_stranded from settled s
                                 where s.license_id = excluded.license_id and s.feature = excluded.feature
                                   and s.period_start = excluded.period_start)),
          updated_at = now()
      returning 1
    )
    select coalesce(sum(consumed), 0)::int8 as consumed,
           coalesce(sum(greatest(take - consumed, 0)), 0)::int8 as returned,
           coalesce(sum(overage), 0)::int8 as overage
    from settled
  `.execute(db);
  return result[0] ?? { consumed: 0, returned: 0, overage: 0 };
}

/** Units allowed without a lease while Postgres was unreachable (fail_open). */
export interface FailOpenRow extends CounterKey {
  readonly quantity: number;
  readonly limit: number;
}

/**
 * Settles fail-open units: what still fits under the limit (limit - used - leased - stranded)
 * goes to `used`, the rest to `overage`, so the invariant holds and nothing is unbilled.
 * Creates missing counter rows. Rows must have distinct keys. 1 statement.
 */
export async function settleFailOpen(db: Kysely<Database>, rows: readonly FailOpenRow[]): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    with f as (
      select * from unnest(
        ${rows.map((r) => r.licenseId)}::text[], ${rows.map((r) => r.feature)}::text[],
        ${rows.map((r) => iso(r.periodStartMs))}::timestamptz[], ${rows.map((r) => r.quantity)}::int8[],
        ${rows.map((r) => r.limit)}::int8[]
      ) as f(license_id, feature, period_start, quantity, lim)
    )
    insert into quota_counters as q (license_id, feature, period_start, used, overage)
    select license_id, feature, period_start, least(quantity, greatest(lim, 0)), quantity - least(quantity, greatest(lim, 0))
    from f
    order by license_id, feature, period_start
    on conflict (license_id, feature, period_start) do update
    set (used, overage, updated_at) = (
      -- Computed on the locked, current row: what fits now, not at the statement's snapshot.
      select q.used + x.fits, q.overage + x.quantity - x.fits, now()
      from (
        select f.quantity, least(f.quantity, greatest(0, f.lim - q.used - q.leased - q.stranded)) as fits
        from f
        where f.license_id = excluded.license_id and f.feature = excluded.feature and f.period_start = excluded.period_start
      ) x
    )
  `.execute(db);
}

/**
 * Gives back every unit of this replica's leases and deletes them (on shutdown, after the last
 * settlement succeeded: whatever a lease still holds is then unused). Resolves the units
 * returned. 1 statement.
 */
export async function releaseLeases(db: Kysely<Database>, replicaId: string): Promise<number> {
  const { rows } = await sql<{ released: number }>`
    with gone as (
      delete from quota_leases where replica_id = ${replicaId}
      returning license_id, feature, period_start, amount
    ),
    per_counter as (
      select license_id, feature, period_start, sum(amount)::int8 as amount
      from gone group by license_id, feature, period_start
    ),
    counter as (
      update quota_counters q set leased = q.leased - p.amount, updated_at = now()
      from per_counter p
      where q.license_id = p.license_id and q.feature = p.feature and q.period_start = p.period_start
      returning 1
    )
    select coalesce(sum(amount), 0)::int8 as released from per_counter
  `.execute(db);
  return rows[0]?.released ?? 0;
}

export interface SeatRequest {
  readonly licenseId: string;
  readonly feature: string;
  readonly instanceId: string;
  readonly replicaId: string;
  /** Most live leases for the licence and feature. */
  readonly limit: number;
  readonly nowMs: number;
  readonly expiresAtMs: number;
}

export interface SeatOutcome {
  readonly held: boolean;
  /** When the lease now expires, epoch ms; null when not held. */
  readonly expiresAtMs: number | null;
  /** Live leases of other instances. */
  readonly others: number;
  /** Earliest expiry among them, epoch ms; null when there are none. */
  readonly nextExpiryMs: number | null;
}

/**
 * Takes (or renews) a seat lease for an instance, exactly: in one transaction, an advisory lock
 * on (licence, feature) serializes acquirers across replicas; expired leases are deleted; the
 * lease is written only if fewer than `limit` other instances hold live ones. An instance that
 * holds a live lease always keeps it. 4 statements (BEGIN, lock and sweep, count and write,
 * COMMIT).
 *
 * Why two statements inside: the count must see every lease committed before the lock was
 * granted, and a READ COMMITTED statement sees only what committed before it started.
 * Renewals (`renewSeatLeases`) do not take the lock; they race safely because a renewal
 * either lands before the sweep (which then skips the row it re-checks as live, and the count
 * sees it) or finds the row deleted.
 */
export async function acquireSeatLease(db: Kysely<Database>, request: SeatRequest): Promise<SeatOutcome> {
  return db.transaction().execute(async (trx) => {
    await sql`
      with locked as (
        select pg_advisory_xact_lock(hashtext(${request.licenseId}), hashtext(${request.feature}))
      )
      delete from seat_leases
      where license_id = ${request.licenseId} and feature = ${request.feature}
        and expires_at <= ${iso(request.nowMs)}::timestamptz and exists (select 1 from locked)
    `.execute(trx);
    const { rows } = await sql<{ others: number; next_expiry: Date | null; expires_at: Date | null }>`
      with live as (
        select count(*) filter (where instance_id <> ${request.instanceId})::int8 as others,
               min(expires_at) filter (where instance_id <> ${request.instanceId}) as next_expiry
        from seat_leases
        where license_id = ${request.licenseId} and feature = ${request.feature}
          and expires_at > ${iso(request.nowMs)}::timestamptz
      ),
      lease as (
        insert into seat_leases (license_id, feature, instance_id, replica_id, acquired_at, expires_at)
        select ${request.licenseId}, ${request.feature}, ${request.instanceId}, ${request.replicaId},
               ${iso(request.nowMs)}::timestamptz, ${iso(request.expiresAtMs)}::timestamptz
        from live where live.others < ${request.limit}::int8
        on conflict (license_id, feature, instance_id) do update
        set expires_at = greatest(seat_leases.expires_at, excluded.expires_at), replica_id = excluded.replica_id
        returning expires_at
      )
      select live.others, live.next_expiry, (select expires_at from lease) as expires_at from live
    `.execute(trx);
    const row = rows[0];
    const expiresAtMs = row?.expires_at?.getTime() ?? null;
    return {
      held: expiresAtMs !== null,
      expiresAtMs,
      others: row?.others ?? 0,
      nextExpiryMs: row?.next_expiry?.getTime() ?? null,
    };
  });
}

export interface SeatRenewal {
  readonly licenseId: string;
  readonly feature: string;
  readonly instanceId: string;
  readonly expiresAtMs: number;
}

/**
 * Extends seat leases (never shortens them). Resolves the renewed leases with their expiry;
 * a lease missing from the answer was deleted (it expired and another instance may hold the
 * seat now). Rows must have distinct keys. 1 statement.
 */
export async function renewSeatLeases(
  db: Kysely<Database>,
  renewals: readonly SeatRenewal[],
): Promise<SeatRenewal[]> {
  if (renewals.length === 0) return [];
  const { rows } = await sql<{ license_id: string; feature: string; instance_id: string; expires_at: Date }>`
    update seat_leases s
    set expires_at = greatest(s.expires_at, v.expires_at)
    from unnest(
      ${renewals.map((r) => r.licenseId)}::text[], ${renewals.map((r) => r.feature)}::text[],
      ${renewals.map((r) => r.instanceId)}::text[], ${renewals.map((r) => iso(r.expiresAtMs))}::timestamptz[]
    ) as v(license_id, feature, instance_id, expires_at)
    where s.license_id = v.license_id and s.feature = v.feature and s.instance_id = v.instance_id
    returning s.license_id, s.feature, s.instance_id, s.expires_at
  `.execute(db);
  return rows.map((row) => ({
    licenseId: row.license_id,
    feature: row.feature,
    instanceId: row.instance_id,
    expiresAtMs: row.expires_at.getTime(),
  }));
}

