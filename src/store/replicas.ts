/**
 * The replica registry: live replicas heartbeat here, and whoever heartbeats also sweeps the
 * leases of replicas that vanished. Each function takes the database first and sends one
 * statement.
 *
 * Liveness: a replica is live while `expires_at > now`. Its quota leases expire later than its
 * liveness (the engine checks leaseTtl > replica TTL), so a lease is swept only when both the
 * lease and its replica have lapsed.
 */
import { sql, type Kysely, type RawBuilder } from "kysely";
import { iso } from "./iso-time.js";
import type { Database } from "./schema.js";

export interface RegisterResult {
  /** Units of leases left under this id by an earlier process, now stranded. */
  readonly stranded: number;
  /** A live replica already had this id (a restart within its TTL, or two processes sharing it). */
  readonly wasLive: boolean;
}

/**
 * Registers (or re-registers) the replica as live until `expiresAtMs`, and strands every quota
 * lease already held under its id: those belong to an earlier process with this id, which may
 * have admitted units it never settled, so they may neither be re-granted nor billed.
 */
export async function registerReplica(
  db: Kysely<Database>,
  replicaId: string,
  nowMs: number,
  expiresAtMs: number,
): Promise<RegisterResult> {
  const { rows } = await sql<{ stranded: number; was_live: boolean }>`
    with previous as (
      select expires_at > ${iso(nowMs)}::timestamptz as live from replicas where id = ${replicaId}
    ),
    registered as (
      insert into replicas (id, started_at, heartbeat_at, expires_at)
      values (${replicaId}, ${iso(nowMs)}::timestamptz, ${iso(nowMs)}::timestamptz, ${iso(expiresAtMs)}::timestamptz)
      on conflict (id) do update
      set started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at
      returning 1
    ),
    ${strandLeases(sql`replica_id = ${replicaId}`)}
    select (select coalesce(sum(amount), 0)::int8 from per_counter) as stranded,
           coalesce((select live from previous), false) as was_live
  `.execute(db);
  return { stranded: rows[0]?.stranded ?? 0, wasLive: rows[0]?.was_live ?? false };
}

export interface HeartbeatResult {
  /** Live replicas, this one included (at least 1). */
  readonly live: number;
  /** Units of vanished replicas' leases this heartbeat moved into `stranded`. */
  readonly stranded: number;
}

/**
 * Heartbeats: the replica is live until `expiresAtMs`, and its quota leases until
 * `leaseExpiresAtMs` (never shortened). Then sweeps: every expired lease of another replica that
 * is not live is deleted and its amount moved from `leased` to `stranded` (units such a replica
 * may have admitted without settling: never granted again, never billed). Counts live replicas.
 */
export async function heartbeatReplica(
  db: Kysely<Database>,
  replicaId: string,
  nowMs: number,
  expiresAtMs: number,
  leaseExpiresAtMs: number,
): Promise<HeartbeatResult> {
  const now = iso(nowMs);
  const { rows } = await sql<{ live: number; stranded: number }>`
    with beat as (
      insert into replicas (id, started_at, heartbeat_at, expires_at)
      values (${replicaId}, ${now}::timestamptz, ${now}::timestamptz, ${iso(expiresAtMs)}::timestamptz)
      on conflict (id) do update set heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at
      returning 1
    ),
    extended as (
      update quota_leases set expires_at = greatest(expires_at, ${iso(leaseExpiresAtMs)}::timestamptz)
      where replica_id = ${replicaId}
      returning 1
    ),
    ${strandLeases(sql`
      replica_id <> ${replicaId} and expires_at <= ${now}::timestamptz
      and not exists (
        select 1 from replicas r where r.id = quota_leases.replica_id and r.expires_at > ${now}::timestamptz
      )
    `)}
    select (select count(*) from replicas where id <> ${replicaId} and expires_at > ${now}::timestamptz)::int8 + 1 as live,
           (select coalesce(sum(amount), 0)::int8 from per_counter) as stranded
  `.execute(db);
  return { live: rows[0]?.live ?? 1, stranded: rows[0]?.stranded ?? 0 };
}

/** Removes the replica from the registry (on shutdown, after its leases were released). */
export async function deregisterReplica(db: Kysely<Database>, replicaId: string): Promise<void> {
  await sql`delete from replicas where id = ${replicaId}`.execute(db);
}

/**
 * CTEs `gone`, `per_counter` and `stranding`: deletes the quota leases matching `where` and
 * moves their units from the counters' `leased` to `stranded`.
 */
function strandLeases(where: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    gone as (
      delete from quota_leases where ${where}
      returning license_id, feature, period_start, amount
    ),
    per_counter as (
      select license_id, feature, period_start, sum(amount)::int8 as amount
      from gone group by license_id, feature, period_start
    ),
    stranding as (
      update quota_counters q
      set leased = q.leased - p.amount, stranded = q.stranded + p.amount, updated_at = now()
      from per_counter p
      where q.license_id = p.license_id and q.feature = p.feature and q.period_start = p.period_start
      returning 1
    )
  `;
}
