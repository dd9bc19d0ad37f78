/**
 * Folds allowed decisions into one row per (second, licence, feature, reason): the part of the
 * decision log that runs on every allowed Check, so `add` allocates nothing once a key exists
 * (three Map lookups and two additions) and never awaits.
 *
 * Reason is part of the key although nearly every allow is "OK": a fail-open allow
 * ("BACKEND_UNAVAILABLE") must stay visible as such, not be summed into the OK row.
 */

/** One aggregated row in the making. */
export interface AllowAggregate {
  /** Epoch milliseconds of the start of the second (a multiple of 1000). */
  timeMs: number;
  licenseId: string | null;
  feature: string;
  reason: string;
  /** Allowed decisions folded in so far. */
  count: number;
  /** Their summed quantity. */
  quantity: number;
  /** The same (second, licence, feature) with another reason; almost always undefined. */
  next: AllowAggregate | undefined;
}

/** Map key for a null licence (a real licence id is a non-empty slug, never this). */
const NO_LICENSE = "\u0000";

type ByFeature = Map<string, AllowAggregate>;
type ByLicense = Map<string, ByFeature>;

export interface AllowAggregator {
  /** Aggregated rows held (one per distinct key), i.e. rows this structure will yield. */
  readonly size: number;
  /**
   * Folds one allow in. Returns false, and changes nothing, when the allow needs a new row
   * and `mayCreate` is false (the queue is full); folding into an existing row is always
   * accepted, since it costs no memory.
   */
  add(timeMs: number, licenseId: string | null, feature: string, reason: string, quantity: number, mayCreate: boolean): boolean;
  /**
   * Removes and returns the rows of every second that has ended by `nowMs` (epoch ms; a
   * second [s, s + 1000) ends at s + 1000), in order of second. `Infinity` takes them all.
   */
  drainEndedBy(nowMs: number): AllowAggregate[];
}

export function createAllowAggregator(): AllowAggregator {
  /** By second (epoch seconds). Usually one or two entries: the current second and the last. */
  const seconds = new Map<number, ByLicense>();
  let size = 0;

  function add(
    timeMs: number,
    licenseId: string | null,
    feature: string,
    reason: string,
    quantity: number,
    mayCreate: boolean,
  ): boolean {
    const second = Math.floor(timeMs / 1000);
    let byLicense = seconds.get(second);
    const byFeature = byLicense?.get(licenseId ?? NO_LICENSE);
    let head = byFeature?.get(feature);
    for (let aggregate = head; aggregate !== undefined; aggregate = aggregate.next) {
      if (aggregate.reason === reason) {
        aggregate.count += 1;
        aggregate.quantity += quantity;
        return true;
      }
    }
    if (!mayCreate) return false;
    head = { timeMs: second * 1000, licenseId, feature, reason, count: 1, quantity, next: head };
    if (byFeature !== undefined) {
      byFeature.set(feature, head);
    } else {
      if (byLicense === undefined) {
        byLicense = new Map();
        seconds.set(second, byLicense);
      }
      byLicense.set(licenseId ?? NO_LICENSE, new Map([[feature, head]]));
    }
    size += 1;
    return true;
  }

  function drainEndedBy(nowMs: number): AllowAggregate[] {
    const closed = [...seconds.keys()].filter((second) => (second + 1) * 1000 <= nowMs).sort((a, b) => a - b);
    const rows: AllowAggregate[] = [];
    for (const second of closed) {
      for (const byFeature of seconds.get(second)?.values() ?? []) {
        for (const head of byFeature.values()) {
          for (let aggregate: AllowAggregate | undefined = head; aggregate !== undefined; aggregate = aggregate.next) {
            rows.push(aggregate);
          }
        }
      }
      seconds.delete(second);
    }
    size -= rows.length;
    return rows;
  }

  return {
    get size() {
      return size;
    },
    add,
    drainEndedBy,
  };
}
