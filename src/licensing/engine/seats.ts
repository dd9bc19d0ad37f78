/**
 * Seats and capacity units: an instance takes one with a lease in Postgres (exact across
 * replicas), and keeps it by checking: each Check renews it in memory, and renewals are written
 * in one statement per settle interval. A seat frees seatTtlMs after its instance's last Check.
 *
 * This replica counts an instance as holding a seat only until the expiry Postgres confirmed (at
 * acquisition or at the last written renewal), never on the strength of a renewal not yet
 * written: another replica may take the seat the moment the row expires.
 */
import type { Kysely } from "kysely";
import { acquireSeatLease, renewSeatLeases, type SeatOutcome, type SeatRenewal } from "../../store/leases.js";
import type { Database } from "../../store/schema.js";
import type { SeatView } from "../counters.js";
import type { EntitlementRule } from "../snapshot.js";
import { CounterUnavailableError, EngineStoppedError } from "./errors.js";
import { ByLicenseFeature } from "./keyed.js";
import type { MutableEngineStats, ResolvedEngineOptions } from "./options.js";

/** After a failed acquisition, the same seat group does not try again for this long, ms. */
const FAILURE_COOLDOWN_MS = 1_000;

/** What Postgres said about one (licence, feature) at the last round trip. */
class SeatGroup {
  inUse = 0;
  nextExpiryMs: number | null = null;
  readonly holds = new Map<string, SeatHold>();
  readonly pending = new Map<string, Promise<SeatView>>();
  /** The view of every instance that holds no seat here. */
  readonly absent: SeatView;
  failedAtMs = Number.NEGATIVE_INFINITY;
  failure: unknown = undefined;
  touchedMs: number;

  constructor(
    readonly licenseId: string,
    readonly feature: string,
    nowMs: number,
  ) {
    this.absent = new AbsentSeat(this);
    this.touchedMs = nowMs;
  }
}

/** The view of an instance holding a seat: live, read it at once and do not keep it. */
class SeatHold implements SeatView {
  readonly held = true;
  /** Postgres has the lease until then, epoch ms. */
  confirmedExpiresAtMs: number;
  /** The instance's last Check, epoch ms. */
  lastSeenMs: number;
  /** Waiting in the renewal queue. */
  queued = false;

  constructor(
    readonly group: SeatGroup,
    readonly instanceId: string,
    expiresAtMs: number,
    nowMs: number,
  ) {
    this.confirmedExpiresAtMs = expiresAtMs;
    this.lastSeenMs = nowMs;
  }

  get inUse(): number {
    return this.group.inUse;
  }

  get nextExpiryMs(): number | null {
    return this.group.nextExpiryMs;
  }
}

class AbsentSeat implements SeatView {
  readonly held = false;

  constructor(readonly group: SeatGroup) {}

  get inUse(): number {
    return this.group.inUse;
  }

  get nextExpiryMs(): number | null {
    return this.group.nextExpiryMs;
  }
}

export interface SeatsDeps {
  readonly db: Kysely<Database>;
  readonly options: ResolvedEngineOptions;
  readonly stats: MutableEngineStats;
  readonly ready: () => Promise<void>;
  readonly stopped: () => boolean;
  /** Called for the BEGIN and COMMIT an acquisition sends (the statement counter misses them). */
  readonly countStatements: (count: number) => void;
}

export interface Seats {
  view(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): SeatView;
  acquire(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): Promise<SeatView>;
  /** A Check from a holding instance: renews its lease in memory (written by `flushRenewals`). */
  commit(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): void;
  /** Background: writes queued renewals in one statement. Rejects when Postgres failed (they stay queued). */
  flushRenewals(): Promise<void>;
  /** Forgets leases that expired, and groups nobody asked about for a while. */
  prune(nowMs: number): void;
  inflight(): Promise<unknown>[];
}

export function createSeats(deps: SeatsDeps): Seats {
  const { options, stats } = deps;
  const groups = new ByLicenseFeature<SeatGroup>();
  let queue: SeatHold[] = [];

  function groupFor(licenseId: string, feature: string, nowMs: number): SeatGroup {
    let group = groups.get(licenseId, feature);
    if (group === undefined) {
      group = new SeatGroup(licenseId, feature, nowMs);
      groups.set(licenseId, feature, group);
    }
    group.touchedMs = nowMs;
    return group;
  }

  /** The instance's hold if Postgres confirmed it beyond `nowMs`. */
  function liveHold(group: SeatGroup, instanceId: string, nowMs: number): SeatHold | undefined {
    const hold = group.holds.get(instanceId);
    return hold !== undefined && hold.confirmedExpiresAtMs > nowMs ? hold : undefined;
  }

  function view(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): SeatView {
    const group = groupFor(licenseId, rule.feature, nowMs);
    return liveHold(group, instanceId, nowMs) ?? group.absent;
  }

  function commit(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): void {
    const group = groupFor(licenseId, rule.feature, nowMs);
    const hold = liveHold(group, instanceId, nowMs);
    if (hold === undefined) return; // nothing to renew: the decision could not have allowed it
    if (nowMs > hold.lastSeenMs) hold.lastSeenMs = nowMs;
    if (!hold.queued) {
      hold.queued = true;
      queue.push(hold);
    }
  }

  function acquire(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): Promise<SeatView> {
    const group = groupFor(licenseId, rule.feature, nowMs);
    const hold = liveHold(group, instanceId, nowMs);
    if (hold !== undefined) return Promise.resolve(hold);
    const pending = group.pending.get(instanceId);
    if (pending !== undefined) return pending;
    if (deps.stopped()) return Promise.reject(new EngineStoppedError());
    if (nowMs - group.failedAtMs < FAILURE_COOLDOWN_MS) {
      return Promise.reject(
        new CounterUnavailableError(`seats ${rule.feature}: the last acquisition failed moments ago`, {
          cause: group.failure,
        }),
      );
    }
    const started = take(group, rule, instanceId, nowMs).finally(() => group.pending.delete(instanceId));
    group.pending.set(instanceId, started);
    return started;
  }

  async function take(group: SeatGroup, rule: EntitlementRule, instanceId: string, nowMs: number): Promise<SeatView> {
    let outcome: SeatOutcome;
    try {
      await deps.ready();
      deps.countStatements(2);
      outcome = await acquireSeatLease(deps.db, {
        licenseId: group.licenseId,
        feature: group.feature,
        instanceId,
        replicaId: options.replicaId,
        limit: rule.limit ?? 0,
        nowMs,
        expiresAtMs: nowMs + options.seatTtlMs,
      });
    } catch (error) {
      group.failedAtMs = options.now();
      group.failure = error;
      throw error;
    }
    group.inUse = outcome.others + (outcome.held ? 1 : 0);
    group.nextExpiryMs = outcome.nextExpiryMs;
    if (!outcome.held || outcome.expiresAtMs === null) {
      stats.seatsDenied += 1;
      group.holds.delete(instanceId);
      return group.absent;
    }
    stats.seatAcquisitions += 1;
    const existing = group.holds.get(instanceId);
    if (existing !== undefined) {
      existing.confirmedExpiresAtMs = Math.max(existing.confirmedExpiresAtMs, outcome.expiresAtMs);
      return existing;
    }
    const hold = new SeatHold(group, instanceId, outcome.expiresAtMs, nowMs);
    group.holds.set(instanceId, hold);
    return hold;
  }

  async function flushRenewals(): Promise<void> {
    const batch = queue;
    queue = [];
    const holds: SeatHold[] = [];
    const renewals: SeatRenewal[] = [];
    for (const hold of batch) {
      hold.queued = false;
      const expiresAtMs = hold.lastSeenMs + options.seatTtlMs;
      if (expiresAtMs <= hold.confirmedExpiresAtMs) continue;
      holds.push(hold);
      renewals.push({ licenseId: hold.group.licenseId, feature: hold.group.feature, instanceId: hold.instanceId, expiresAtMs });
    }
    if (renewals.length === 0) return;
    let renewed: SeatRenewal[];
    try {
      renewed = await renewSeatLeases(deps.db, renewals);
    } catch (error) {
      requeue(holds);
      throw error;
    }
    applyRenewals(holds, renewed);
  }

  function requeue(holds: readonly SeatHold[]): void {
    for (const hold of holds) {
      if (hold.queued) continue;
      hold.queued = true;
      queue.push(hold);
    }
  }

  /** Confirms the renewed leases; a lease missing from the answer was deleted: the seat is gone. */
  function applyRenewals(holds: readonly SeatHold[], renewed: readonly SeatRenewal[]): void {
    const expiryByHold = new Map<string, number>();
    for (const row of renewed) expiryByHold.set(holdKey(row.licenseId, row.feature, row.instanceId), row.expiresAtMs);
    for (const hold of holds) {
      const expiresAtMs = expiryByHold.get(holdKey(hold.group.licenseId, hold.group.feature, hold.instanceId));
      if (expiresAtMs !== undefined) {
        hold.confirmedExpiresAtMs = Math.max(hold.confirmedExpiresAtMs, expiresAtMs);
        stats.seatRenewals += 1;
      } else if (hold.group.holds.get(hold.instanceId) === hold) {
        stats.seatsLost += 1;
        hold.group.holds.delete(hold.instanceId);
      }
    }
  }

  function prune(nowMs: number): void {
    for (const group of [...groups.values()]) {
      for (const [instanceId, hold] of group.holds) {
        if (hold.confirmedExpiresAtMs <= nowMs && !hold.queued) group.holds.delete(instanceId);
      }
      if (group.holds.size === 0 && group.pending.size === 0 && nowMs - group.touchedMs >= options.seatTtlMs) {
        groups.delete(group.licenseId, group.feature);
      }
    }
  }

  function inflight(): Promise<unknown>[] {
    const pending: Promise<unknown>[] = [];
    for (const group of groups.values()) pending.push(...group.pending.values());
    return pending;
  }

  return { view, acquire, commit, flushRenewals, prune, inflight };
}

function holdKey(licenseId: string, feature: string, instanceId: string): string {
  return `${licenseId}\u0000${feature}\u0000${instanceId}`;
}
