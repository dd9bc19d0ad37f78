/**
 * The Check path's side of reserve-then-settle: `record` is a memory enqueue (no promise, no
 * I/O, O(1)); `flush` writes the queued reservations in one transaction. Bounded: beyond
 * `maxQueue` a reservation is dropped, counted and logged (a Report settling it later then
 * counts its full quantity as usage on top of the Check's consumption, i.e. the caller is
 * billed the reserved amount as well, never under-billed).
 */
import type { Kysely } from "kysely";
import type { LicenseSnapshot } from "../licensing/snapshot.js";
import type { Database } from "../store/schema.js";
import { quotaTargetOf, storeReservations, type ReservationRecord } from "./reservations.js";

export interface ReservationRecorder {
  /**
   * Called by Check after it ALLOWED and consumed `quantity` (> 0) units of `feature` for an
   * operation_id (not for dry runs, not for a retry answered from the operation cache). A
   * feature without a quota entitlement records nothing. Never throws, never blocks.
   */
  record(snapshot: LicenseSnapshot, feature: string, operationId: string, quantity: number, nowMs: number): void;
}

export interface ReservationWriterOptions {
  readonly db: Kysely<Database>;
  /** An unsettled reservation is released after this long, ms. */
  readonly ttlMs: number;
  /** Most reservations held for writing. */
  readonly maxQueue: number;
  readonly logger: { warn(obj: object, msg: string): void };
}

export interface ReservationWriter extends ReservationRecorder {
  /** Writes what is queued; on failure keeps it (within maxQueue) and rejects. */
  flush(): Promise<number>;
  queued(): number;
  stats(): { recorded: number; written: number; dropped: number };
}

/** At most one "dropped" warning per this many drops, so a flood cannot flood the log. */
const DROP_LOG_EVERY = 1000;

export function createReservationWriter(options: ReservationWriterOptions): ReservationWriter {
  let queue: ReservationRecord[] = [];
  let flushing: Promise<number> | undefined;
  const counts = { recorded: 0, written: 0, dropped: 0 };

  function record(snapshot: LicenseSnapshot, feature: string, operationId: string, quantity: number, nowMs: number): void {
    if (operationId === "" || quantity <= 0) return;
    const quota = quotaTargetOf(snapshot, feature, nowMs);
    if (quota === null) return;
    if (queue.length >= options.maxQueue) {
      dropped(1);
      return;
    }
    counts.recorded += 1;
    queue.push({ licenseId: snapshot.licenseId, feature, operationId, reserved: quantity, quota, atMs: nowMs });
  }

  function dropped(count: number): void {
    const before = counts.dropped;
    counts.dropped += count;
    if (Math.floor(before / DROP_LOG_EVERY) !== Math.floor(counts.dropped / DROP_LOG_EVERY) || before === 0) {
      options.logger.warn({ dropped: counts.dropped, maxQueue: options.maxQueue }, "reservation queue full: reservations dropped (their Reports will count in full)");
    }
  }

  function flush(): Promise<number> {
    // One flush at a time: a second caller waits for the one under way, then writes the rest.
    flushing ??= write().finally(() => {
      flushing = undefined;
    });
    return flushing;
  }

  async function write(): Promise<number> {
    const batch = queue;
    if (batch.length === 0) return 0;
    queue = [];
    try {
      await options.db.transaction().execute((trx) => storeReservations(trx, batch, options.ttlMs));
    } catch (error) {
      const room = Math.max(0, options.maxQueue - queue.length);
      if (batch.length > room) dropped(batch.length - room);
      queue = batch.slice(0, room).concat(queue);
      throw error;
    }
    counts.written += batch.length;
    return batch.length;
  }

  return { record, flush, queued: () => queue.length, stats: () => ({ ...counts }) };
}
