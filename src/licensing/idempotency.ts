/**
 * operation_id: a retried Check with the same id (per licence, within the window) gets the
 * same answer and consumes once. Held in this replica's memory, bounded in entries and time;
 * concurrent retries of an operation still being decided share its answer.
 *
 * A retry that lands on another replica is not recognised here; callers that need exactly-once
 * across replicas reserve with an operation_id and settle with Report (see DESIGN §6).
 */
import { invalidArgument } from "../server/errors.js";
import type { MaybePromise } from "./sync.js";

export interface IdempotencyOptions {
  /** How long an answer is remembered, in ms. */
  readonly windowMs: number;
  /** Most operations remembered; the oldest are forgotten first. */
  readonly maxEntries: number;
  readonly now: () => number;
}

interface Entry<T> {
  readonly fingerprint: string;
  readonly expiresAtMs: number;
  answer: MaybePromise<T>;
}

export interface OperationCache<T> {
  /**
   * The remembered answer for this operation, or undefined. Throws INVALID_ARGUMENT when the
   * id was used for a different request (feature, quantity...), which is a caller bug.
   */
  lookup(licenseId: string, operationId: string, fingerprint: string): MaybePromise<T> | undefined;
  /** Remembers the answer (or the promise of it; a rejected promise is forgotten). */
  remember(licenseId: string, operationId: string, fingerprint: string, answer: MaybePromise<T>): void;
  readonly size: number;
}

export function createOperationCache<T>(options: IdempotencyOptions): OperationCache<T> {
  const entries = new Map<string, Entry<T>>();

  function evict(nowMs: number): void {
    // Entries are in insertion order, so expired ones are at the front.
    for (const [key, entry] of entries) {
      if (entries.size <= options.maxEntries && entry.expiresAtMs > nowMs) break;
      entries.delete(key);
    }
  }

  return {
    lookup(licenseId, operationId, fingerprint) {
      const entry = entries.get(`${licenseId}\u0000${operationId}`);
      if (entry === undefined || entry.expiresAtMs <= options.now()) return undefined;
      if (entry.fingerprint !== fingerprint) {
        throw invalidArgument("operation_id", `"${operationId}" was already used for a different request`);
      }
      return entry.answer;
    },
    remember(licenseId, operationId, fingerprint, answer) {
      const nowMs = options.now();
      const key = `${licenseId}\u0000${operationId}`;
      const entry: Entry<T> = { fingerprint, expiresAtMs: nowMs + options.windowMs, answer };
      entries.delete(key);
      entries.set(key, entry);
      if (answer instanceof Promise) {
        answer.then(
          (settled) => {
            if (entries.get(key) === entry) entry.answer = settled;
          },
          () => {
            if (entries.get(key) === entry) entries.delete(key);
          },
        );
      }
      evict(nowMs);
    },
    get size() {
      return entries.size;
    },
  };
}
