/**
 * The durable write of a batch of usage events: claim the ids, insert the new events, count
 * them against quotas, settle reservations. All or nothing, in one transaction (one statement
 * when no event touches a quota).
 *
 * Idempotency: an event is inserted iff its id is newly claimed in `usage_event_ids` by the same
 * statement, so a batch retried a minute or a month later inserts nothing again and is counted
 * as duplicates, whichever partition its events landed in. Only newly claimed events move
 * quota counters or settle reservations.
 */
import { sql, type Kysely } from "kysely";
import { iso } from "../store/iso-time.js";
import type { Database } from "../store/schema.js";
import { applyQuotaDeltas, type QuotaDelta } from "./quota-deltas.js";
import { storeSettlements, type QuotaTarget, type Settlement } from "./reservations.js";

/**
 * A validated, resolved event: everything the write needs, nothing that must be looked up
 * again (the spool stores exactly this, so a replay needs no credential or licence).
 */
export interface PreparedEvent {
  readonly id: string;
  readonly licenseId: string;
  readonly feature: string;
  readonly quantity: number;
  /** Epoch ms. */
  readonly occurredAtMs: number;
  /** Epoch ms: when the service first received it (kept through the spool). */
  readonly receivedAtMs: number;
  readonly attributes: Readonly<Record<string, string>>;
  /** "" when the event settles no reservation. */
  readonly operationId: string;
  /** The quota the event counts against (from the licence snapshot at receipt), or null. */
  readonly quota: QuotaTarget | null;
}

export interface BatchResult {
  /** Events recorded for the first time. */
  readonly accepted: number;
  /** Events whose id was recorded before (or earlier in the same batch). */
  readonly duplicates: number;
}

export interface InsertOptions {
  /** Lifetime of a reservation row a settlement creates first, ms. */
  readonly reservationTtlMs: number;
  /** Epoch ms, for settlement rows. */
  readonly nowMs: number;
}

/** PostgreSQL's deadlock_detected: the transaction was rolled back and may simply run again. */
const DEADLOCK = "40P01";
const MAX_ATTEMPTS = 3;

/**
 * Writes the batch durably and resolves what was new. Throws the database's error (nothing
 * was written then). Retries a deadlock (rolled back whole) up to 3 times.
 */
export async function insertUsageBatch(
  db: Kysely<Database>,
  events: readonly PreparedEvent[],
  options: InsertOptions,
): Promise<BatchResult> {
  const [result] = await insertUsageBatches(db, [events], options);
  return result ?? { accepted: 0, duplicates: events.length };
}

/**
 * Writes several batches in one transaction (group commit: the quota counters they share are
 * locked and updated once, not once per batch) and resolves each batch's own result, in order.
 * An id in two of the batches is accepted in the first and a duplicate in the second, exactly
 * as if the batches had been written one after the other. All or nothing, like one batch.
 */
export async function insertUsageBatches(
  db: Kysely<Database>,
  batches: readonly (readonly PreparedEvent[])[],
  options: InsertOptions,
): Promise<BatchResult[]> {
  // Each id's first occurrence in batch order is the event written; later ones are duplicates.
  const written = new Map<string, PreparedEvent>();
  for (const batch of batches) for (const e of batch) if (!written.has(e.id)) written.set(e.id, e);
  const unique = [...written.values()].sort(byId);
  const fresh = unique.length === 0 ? new Set<string>() : await writeRetryingDeadlocks(db, unique, options);
  return batches.map((batch) => {
    let accepted = 0;
    for (const e of batch) if (written.get(e.id) === e && fresh.has(e.id)) accepted += 1;
    return { accepted, duplicates: batch.length - accepted };
  });
}

async function writeRetryingDeadlocks(db: Kysely<Database>, events: readonly PreparedEvent[], options: InsertOptions): Promise<Set<string>> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await write(db, events, options);
    } catch (error) {
      if (attempt >= MAX_ATTEMPTS || sqlState(error) !== DEADLOCK) throw error;
    }
  }
}

/** Resolves the ids newly recorded. */
async function write(db: Kysely<Database>, events: readonly PreparedEvent[], options: InsertOptions): Promise<Set<string>> {
  if (events.every((e) => e.quota === null)) return claimAndInsert(db, events);
  return db.transaction().execute(async (trx) => {
    const fresh = await claimAndInsert(trx, events);
    const settlements: Settlement[] = [];
    const deltas: QuotaDelta[] = [];
    for (const e of events) {
      if (e.quota === null || !fresh.has(e.id)) continue;
      if (e.operationId !== "") {
        settlements.push({ licenseId: e.licenseId, feature: e.feature, operationId: e.operationId, actual: e.quantity, quota: e.quota });
      } else if (e.quantity > 0) {
        deltas.push({ licenseId: e.licenseId, feature: e.feature, periodStartMs: e.quota.periodStartMs, delta: e.quantity, limit: e.quota.limit, allowOverage: e.quota.allowOverage });
      }
    }
    // Lock order everywhere: event ids, then reservations, then counters (no deadlock cycles).
    await storeSettlements(trx, settlements, options.nowMs, options.reservationTtlMs);
    await applyQuotaDeltas(trx, deltas);
    return fresh;
  });
}

/**
 * Claims the ids and inserts the events whose id this statement claimed, in one statement with
 * one parameter (one round trip, one plan, whatever the batch size). Resolves the claimed ids.
 *
 * The batch travels as a JSON array of rows, each an array in `input`'s column order: one
 * JSON.stringify, where eight array parameters cost pg an escaped array literal per column
 * (about 8% of the ingest path's CPU). Report validation keeps U+0000 and unpaired surrogates,
 * which jsonb refuses, out of every string here.
 */
async function claimAndInsert(db: Kysely<Database>, events: readonly PreparedEvent[]): Promise<Set<string>> {
  const batch = JSON.stringify(
    events.map((e) => [e.id, e.licenseId, e.feature, e.quantity, iso(e.occurredAtMs), iso(e.receivedAtMs), e.attributes, e.operationId]),
  );
  const { rows } = await sql<{ id: string }>`
    with input as (
      select r->>0 as id, r->>1 as license_id, r->>2 as feature, (r->>3)::int8 as quantity,
        (r->>4)::timestamptz as occurred_at, (r->>5)::timestamptz as received_at, r->6 as attributes, r->>7 as operation_id
      from jsonb_array_elements(${batch}::jsonb) as r
    ),
    claimed as (
      insert into usage_event_ids (id, occurred_at)
      select id, occurred_at from input
      on conflict (id) do nothing
      returning id
    ),
    inserted as (
      insert into usage_events (id, license_id, feature, quantity, occurred_at, received_at, attributes, operation_id)
      select i.id, i.license_id, i.feature, i.quantity, i.occurred_at, i.received_at, i.attributes, nullif(i.operation_id, '')
      from input i join claimed c on c.id = i.id
      returning 1
    )
    select id from claimed
  `.execute(db);
  return new Set(rows.map((r) => r.id));
}

/** Sorting by id gives concurrent batches a stable lock order. */
function byId(a: PreparedEvent, b: PreparedEvent): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function sqlState(error: unknown): string | undefined {
  const code: unknown = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}
