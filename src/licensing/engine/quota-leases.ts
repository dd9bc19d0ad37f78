/**
 * Quota leases: each replica leases blocks of a quota from Postgres, spends them from memory, and
 * settles what it spent in batches.
 *
 * Exactness: a unit is spent only from a block Postgres granted to this replica (one atomic lease
 * statement that never grants past the limit), and only while that lease is known to be alive,
 * so the cluster never admits more than the limit. Units allowed beyond the lease are recorded as
 * overage, never silently.
 *
 * Block size: about `targetLeaseMs` of this replica's observed rate (moving average, or the current
 * window when that is higher, so a burst ramps up within a few leases), clamped to
 * [minBlock, maxBlock], and at most free / (2 × live replicas) so the last units are shared. A
 * refill starts in the background when local units fall below half of the last block
 * (pre-warming), so in steady state no Check waits on Postgres. When Checks do wait (a cold
 * start, a new period), the statement asks for at least all their units, sized as it goes out.
 */
import type { Kysely } from "kysely";
import {
  ensureQuotaCounter,
  leaseQuota,
  settleQuotas,
  type LeaseRequest,
  type SettleRow,
} from "../../store/leases.js";
import type { Database, EntitlementPeriod } from "../../store/schema.js";
import type { QuotaView } from "../counters.js";
import type { EntitlementRule } from "../snapshot.js";
import { CounterUnavailableError, EngineStoppedError } from "./errors.js";
import { ByLicenseFeature, counterKey } from "./keyed.js";
import type { MutableEngineStats, ResolvedEngineOptions } from "./options.js";
import { periodEndMs, periodStartMs } from "./period.js";
import type { SerialQueue } from "./serial-queue.js";

/** Time constant of the rate's moving average, ms: how quickly a past rate is forgotten. */
const RATE_TIME_CONSTANT_MS = 2_000;
/** Shortest window a rate is measured over, ms; shorter windows are too noisy to size blocks by. */
const MIN_RATE_WINDOW_MS = 250;
/** A background refill starts when local units fall below this fraction of the last block. */
const PREWARM_FRACTION = 0.5;
/** A lease takes at most free / (FAIR_SHARE_DIVISOR × live replicas) units, beyond what is needed. */
const FAIR_SHARE_DIVISOR = 2;
/** After a failed round trip, a quota does not try again for this long, ms. */
const FAILURE_COOLDOWN_MS = 1_000;

/**
 * One quota as this replica sees it. It is the `QuotaView` the engine returns: a live object,
 * to be read at once and not kept (it changes as units are spent and leased).
 */
export class QuotaState implements QuotaView {
  // --- the view ---
  localAvailable = 0;
  remaining: number;
  exhausted = false;
  resetsAtMs: number | null;

  // --- the period ---
  period: EntitlementPeriod | null;
  periodStartMs: number;
  /** Start of the next period, epoch ms; Infinity for lifetime quotas. */
  periodEndMs: number;
  /** The counter row is known to exist for this period. */
  counterKnown = false;

  // --- the lease ---
  /** limit - used - leased - stranded at the last round trip (the limit, before any). */
  free: number;
  /** The lease row lives at least until then, epoch ms; 0 when there is none. */
  leaseExpiresAtMs = 0;
  /** Size of the last block asked for; pre-warming refills below half of it. */
  lastBlock = 0;
  inflight: Promise<void> | null = null;
  /**
   * Units wanted by Checks waiting on a refill right now. The lease statement asks for at least
   * this much (less what is local), so a burst of waiters on a cold quota is served by one or two
   * round trips rather than a chain of small blocks.
   */
  waiting = 0;
  /** Start of the last lease round trip, epoch ms: paces rechecks of an exhausted quota. */
  lastLeaseMs = Number.NEGATIVE_INFINITY;
  /** When a round trip last failed, epoch ms, and why (for the cooldown). */
  failedAtMs = Number.NEGATIVE_INFINITY;
  failure: unknown = undefined;
  /** Last time a Check found it exhausted, epoch ms: a recheck is worth a statement. */
  demandMs = Number.NEGATIVE_INFINITY;

  // --- to settle ---
  unsettled = 0;
  unsettledOverage = 0;
  /** Unused units to give back with the next settlement. */
  returning = 0;

  // --- the rate, for block sizes ---
  lastConsumeMs: number;
  windowStartMs: number;
  windowConsumed = 0;
  /** Units per second, moving average. */
  rateEwma = 0;

  constructor(
    readonly licenseId: string,
    readonly feature: string,
    public rule: EntitlementRule,
    nowMs: number,
  ) {
    this.period = rule.period;
    this.periodStartMs = periodStartMs(rule.period, nowMs);
    const end = periodEndMs(rule.period, this.periodStartMs);
    this.periodEndMs = end ?? Number.POSITIVE_INFINITY;
    this.resetsAtMs = end;
    this.free = limitOf(rule);
    this.remaining = this.free;
    this.lastConsumeMs = nowMs;
    this.windowStartMs = nowMs;
  }
}

export interface QuotaLeasesDeps {
  /** The counting database handle. */
  readonly db: Kysely<Database>;
  readonly options: ResolvedEngineOptions;
  readonly stats: MutableEngineStats;
  /** Live replicas at the last heartbeat (>= 1). */
  readonly liveReplicas: () => number;
  /** Resolves once the replica is registered; rejects when it cannot be. */
  readonly ready: () => Promise<void>;
  readonly stopped: () => boolean;
  /** Serializes this replica's statements on its own lease rows (see serial-queue.ts). */
  readonly serial: SerialQueue;
  /** Told about a background refill that failed (the caller throttles the log). */
  readonly backgroundFailed: (what: string, error: unknown) => void;
}

export interface QuotaLeases {
  /** The quota's view at `nowMs` (rolls the period, drops a lease that may have lapsed). */
  view(licenseId: string, rule: EntitlementRule, nowMs: number): QuotaView;
  /**
   * Spends `quantity - overage` units from the lease and records `overage`; units beyond what
   * the lease holds are recorded as overage too (and counted in stats.unitsUnleased).
   */
  commit(licenseId: string, rule: EntitlementRule, quantity: number, overage: number, nowMs: number): void;
  refill(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): Promise<QuotaView>;
  /**
   * Background, every settle interval: folds rates, gives back idle units, and settles all
   * quotas in one statement. Rejects when Postgres failed; the batch is kept for the next try.
   */
  settle(nowMs: number): Promise<void>;
  /** Background: asks Postgres again for exhausted quotas that Checks still want (paced). */
  recheckExhausted(nowMs: number): void;
  /**
   * After a heartbeat extended every lease row of this replica to `expiresAtMs`, answered at
   * `answeredAtMs`: leases that were still alive then live on; those that may have lapsed are
   * dropped.
   */
  leasesExtended(expiresAtMs: number, answeredAtMs: number): void;
  /** Round trips under way, for shutdown. */
  inflight(): Promise<unknown>[];
  /** Consumed and overage units not settled yet. */
  unsettledUnits(): number;
}

export function createQuotaLeases(deps: QuotaLeasesDeps): QuotaLeases {
  const { options, stats } = deps;
  const states = new ByLicenseFeature<QuotaState>();
  /** Settlement rows of past periods and of failed batches, merged into the next batch. */
  let carried: SettleRow[] = [];

  function stateFor(licenseId: string, rule: EntitlementRule, nowMs: number): QuotaState {
    let state = states.get(licenseId, rule.feature);
    if (state === undefined) {
      state = new QuotaState(licenseId, rule.feature, rule, nowMs);
      states.set(licenseId, rule.feature, state);
      return state;
    }
    state.rule = rule;
    if (nowMs >= state.periodEndMs || rule.period !== state.period) rollPeriod(state, nowMs);
    if (state.localAvailable > 0 && !leaseAlive(state, nowMs)) forfeit(state);
    return state;
  }

  function leaseAlive(state: QuotaState, nowMs: number): boolean {
    return nowMs < state.leaseExpiresAtMs - options.leaseSafetyMs;
  }

  /**
   * Local units of a lease that may have lapsed (Postgres unreachable for longer than the lease
   * TTL minus the safety margin) must not be spent: a sweeper may have stranded them already.
   * They are not given back either (the row may be gone and a newer one must not lose units);
   * they stay in the row, if it lives, until shutdown releases it.
   */
  function forfeit(state: QuotaState): void {
    stats.unitsForfeited += state.localAvailable;
    state.remaining -= state.localAvailable;
    state.localAvailable = 0;
  }

  /** The period ended (or the rule's period changed): settle the old one, start the new one. */
  function rollPeriod(state: QuotaState, nowMs: number): void {
    if (!leaseAlive(state, nowMs)) forfeit(state);
    carry({
      ...periodKey(state),
      consumed: state.unsettled,
      returned: state.localAvailable + state.returning,
      overage: state.unsettledOverage,
    });
    state.period = state.rule.period;
    state.periodStartMs = periodStartMs(state.rule.period, nowMs);
    const end = periodEndMs(state.rule.period, state.periodStartMs);
    state.periodEndMs = end ?? Number.POSITIVE_INFINITY;
    state.resetsAtMs = end;
    state.counterKnown = false;
    state.localAvailable = 0;
    state.unsettled = 0;
    state.unsettledOverage = 0;
    state.returning = 0;
    state.leaseExpiresAtMs = 0;
    state.exhausted = false;
    state.free = limitOf(state.rule);
    state.remaining = state.free;
    state.lastBlock = 0;
  }

  function carry(row: SettleRow): void {
    if (row.consumed > 0 || row.returned > 0 || row.overage > 0) carried.push(row);
  }

  function view(licenseId: string, rule: EntitlementRule, nowMs: number): QuotaView {
    const state = stateFor(licenseId, rule, nowMs);
    if (state.exhausted) state.demandMs = nowMs;
    return state;
  }

  function commit(licenseId: string, rule: EntitlementRule, quantity: number, overage: number, nowMs: number): void {
    const state = stateFor(licenseId, rule, nowMs);
    let fromLease = quantity - overage;
    let extra = overage;
    if (fromLease > state.localAvailable) {
      stats.unitsUnleased += fromLease - state.localAvailable;
      extra += fromLease - state.localAvailable;
      fromLease = state.localAvailable;
    }
    state.localAvailable -= fromLease;
    state.remaining -= fromLease;
    state.unsettled += fromLease;
    state.unsettledOverage += extra;
    state.windowConsumed += quantity;
    state.lastConsumeMs = nowMs;
    if (shouldPrewarm(state, nowMs)) prewarm(state, nowMs);
  }

  function shouldPrewarm(state: QuotaState, nowMs: number): boolean {
    return (
      state.inflight === null &&
      !state.exhausted &&
      state.localAvailable < state.lastBlock * PREWARM_FRACTION &&
      nowMs - state.failedAtMs >= FAILURE_COOLDOWN_MS &&
      !deps.stopped()
    );
  }

  function prewarm(state: QuotaState, nowMs: number): void {
    stats.refillsPrewarmed += 1;
    startLease(state, 0, nowMs).catch((error: unknown) => deps.backgroundFailed("pre-warm quota lease", error));
  }

  function refill(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): Promise<QuotaView> {
    const state = stateFor(licenseId, rule, nowMs);
    if (state.localAvailable >= quantity) return Promise.resolve(state);
    if (deps.stopped()) return Promise.reject(new EngineStoppedError());
    if (state.inflight === null && nowMs - state.failedAtMs < FAILURE_COOLDOWN_MS) {
      return Promise.reject(
        new CounterUnavailableError(`quota ${rule.feature}: the last lease round trip failed moments ago`, {
          cause: state.failure,
        }),
      );
    }
    stats.refillsWaited += 1;
    return refillUntil(state, quantity);
  }

  /**
   * Joins the round trip under way or starts one; if concurrent callers spent its units first,
   * one more. The caller decides again with the view it gets (which may still be short).
   */
  async function refillUntil(state: QuotaState, quantity: number): Promise<QuotaView> {
    state.waiting += quantity;
    try {
      for (let round = 0; round < 2 && state.localAvailable < quantity; round += 1) {
        if (state.inflight !== null) {
          await state.inflight;
          continue;
        }
        const nowMs = options.now();
        if (state.exhausted && nowMs - state.lastLeaseMs < options.exhaustedRecheckMs) break;
        await startLease(state, quantity - state.localAvailable, nowMs);
      }
    } finally {
      state.waiting -= quantity;
    }
    return state;
  }

  /** Starts one lease round trip for the state; concurrent refills share it via `inflight`. */
  function startLease(state: QuotaState, needed: number, nowMs: number): Promise<void> {
    const amount = blockFor(state, needed, nowMs);
    state.lastLeaseMs = nowMs;
    const request: LeaseRequest = {
      replicaId: options.replicaId,
      licenseId: state.licenseId,
      feature: state.feature,
      periodStartMs: state.periodStartMs,
      amount,
      limit: limitOf(state.rule),
      expiresAtMs: nowMs + options.leaseTtlMs,
    };
    const pending = lease(state, request).then(
      () => {
        state.inflight = null;
      },
      (error: unknown) => {
        state.inflight = null;
        state.failedAtMs = options.now();
        state.failure = error;
        throw error;
      },
    );
    state.inflight = pending;
    return pending;
  }

  async function lease(state: QuotaState, planned: LeaseRequest): Promise<void> {
    await deps.ready();
    let request = planned;
    const grant = await deps.serial.run(async () => {
      // Sized as the statement goes out: Checks that queued up since the round trip was planned
      // (a cold start, a new period) want units too, and would otherwise each wait for one more.
      request = withWaitingDemand(state, planned);
      if (!state.counterKnown || state.periodStartMs !== request.periodStartMs) {
        await ensureQuotaCounter(deps.db, request);
      }
      return leaseQuota(deps.db, request);
    });
    if (grant === undefined) {
      // The row was there a moment ago: the licence was deleted (its counters cascade).
      throw new Error(`quota ${request.feature}: the counter row vanished (licence deleted?)`);
    }
    const answeredAtMs = options.now();
    stats.unitsLeased += grant.granted;
    if (grant.granted > 0) stats.leasesTaken += 1;
    if (state.periodStartMs !== request.periodStartMs) {
      // The period rolled while the lease was on the wire: its units belong to the old period.
      carry({ ...periodKey(request), consumed: 0, returned: grant.granted, overage: 0 });
      return;
    }
    state.counterKnown = true;
    if (grant.granted > 0) {
      if (state.localAvailable > 0 && !leaseAlive(state, answeredAtMs)) forfeit(state);
      state.leaseExpiresAtMs = Math.max(state.leaseExpiresAtMs, request.expiresAtMs);
      state.localAvailable += grant.granted;
    }
    state.free = request.limit - grant.used - grant.leased - grant.stranded;
    state.remaining = Math.max(0, state.free) + state.localAvailable;
    state.exhausted = state.free <= 0;
    state.lastBlock = request.amount;
  }

  /** The planned lease, asking for every waiting Check's units when that is more. */
  function withWaitingDemand(state: QuotaState, planned: LeaseRequest): LeaseRequest {
    const short = state.waiting - state.localAvailable;
    return short > planned.amount ? { ...planned, amount: short } : planned;
  }

  /**
   * Units to ask for: what the caller needs, or about targetLeaseMs of traffic when more, but
   * never more than a fair share of what is left (so one replica cannot hoard the last units).
   */
  function blockFor(state: QuotaState, needed: number, nowMs: number): number {
    const rate = Math.max(state.rateEwma, windowRate(state, nowMs));
    const byRate = Math.ceil((rate * options.targetLeaseMs) / 1000);
    const block = Math.min(options.maxBlock, Math.max(options.minBlock, byRate));
    const fairShare = Math.max(1, Math.floor(Math.max(0, state.free) / (FAIR_SHARE_DIVISOR * deps.liveReplicas())));
    return Math.max(needed, Math.min(block, fairShare));
  }

  function windowRate(state: QuotaState, nowMs: number): number {
    return (state.windowConsumed * 1000) / Math.max(MIN_RATE_WINDOW_MS, nowMs - state.windowStartMs);
  }

  /** Folds the current window into the moving average (once it is long enough to mean something). */
  function foldRate(state: QuotaState, nowMs: number): void {
    const elapsedMs = nowMs - state.windowStartMs;
    if (elapsedMs < MIN_RATE_WINDOW_MS) return;
    const alpha = 1 - Math.exp(-elapsedMs / RATE_TIME_CONSTANT_MS);
    state.rateEwma += alpha * ((state.windowConsumed * 1000) / elapsedMs - state.rateEwma);
    state.windowStartMs = nowMs;
    state.windowConsumed = 0;
  }

  async function settle(nowMs: number): Promise<void> {
    const rows = collectSettlement(nowMs);
    if (rows.length === 0) return;
    const result = await deps.serial
      .run(() => settleQuotas(deps.db, options.replicaId, rows, nowMs + options.leaseTtlMs))
      .catch((error: unknown) => {
        carried = rows.concat(carried);
        throw error;
      });
    stats.unitsSettled += result.consumed;
    stats.unitsReturned += result.returned;
    stats.overageSettled += result.overage;
  }

  /** Takes every unsettled amount (one row per counter) and clears it from the states. */
  function collectSettlement(nowMs: number): SettleRow[] {
    const byKey = new Map<string, SettleRow>();
    const add = (row: SettleRow): void => {
      const key = counterKey(row.licenseId, row.feature, row.periodStartMs);
      const seen = byKey.get(key);
      byKey.set(
        key,
        seen === undefined
          ? row
          : {
              ...row,
              consumed: seen.consumed + row.consumed,
              returned: seen.returned + row.returned,
              overage: seen.overage + row.overage,
            },
      );
    };
    for (const state of [...states.values()]) {
      const row = takeFromState(state, nowMs);
      if (row !== undefined) add(row);
    }
    // After the states: a period that just rolled carried its last rows here.
    for (const row of carried) add(row);
    carried = [];
    return [...byKey.values()];
  }

  function takeFromState(state: QuotaState, nowMs: number): SettleRow | undefined {
    if (nowMs >= state.periodEndMs) rollPeriod(state, nowMs);
    foldRate(state, nowMs);
    if (state.localAvailable > 0 && !leaseAlive(state, nowMs)) forfeit(state);
    if (state.localAvailable > 0 && state.inflight === null && nowMs - state.lastConsumeMs >= options.idleReturnMs) {
      // Idle: give the units back rather than keep a lease alive for nobody.
      state.returning += state.localAvailable;
      state.free += state.localAvailable;
      state.localAvailable = 0;
      state.lastBlock = 0;
    }
    if (state.unsettled === 0 && state.unsettledOverage === 0 && state.returning === 0) {
      forgetIfIdle(state, nowMs);
      return undefined;
    }
    const row: SettleRow = {
      ...periodKey(state),
      consumed: state.unsettled,
      returned: state.returning,
      overage: state.unsettledOverage,
    };
    state.unsettled = 0;
    state.unsettledOverage = 0;
    state.returning = 0;
    return row;
  }

  /** Drops a quota nobody used for a while and that holds nothing, so memory stays bounded. */
  function forgetIfIdle(state: QuotaState, nowMs: number): void {
    const idleMs = nowMs - Math.max(state.lastConsumeMs, state.demandMs, state.lastLeaseMs);
    if (state.localAvailable === 0 && state.inflight === null && idleMs >= 2 * options.leaseTtlMs) {
      states.delete(state.licenseId, state.feature);
    }
  }

  function recheckExhausted(nowMs: number): void {
    for (const state of states.values()) {
      if (
        state.exhausted &&
        state.inflight === null &&
        state.demandMs > state.lastLeaseMs &&
        nowMs - state.lastLeaseMs >= options.exhaustedRecheckMs &&
        nowMs - state.failedAtMs >= FAILURE_COOLDOWN_MS &&
        !deps.stopped()
      ) {
        startLease(state, 0, nowMs).catch((error: unknown) => deps.backgroundFailed("recheck exhausted quota", error));
      }
    }
  }

  function leasesExtended(expiresAtMs: number, answeredAtMs: number): void {
    for (const state of states.values()) {
      if (state.leaseExpiresAtMs === 0) continue;
      if (leaseAlive(state, answeredAtMs)) {
        state.leaseExpiresAtMs = Math.max(state.leaseExpiresAtMs, expiresAtMs);
      } else if (state.localAvailable > 0) {
        forfeit(state);
      }
    }
  }

  function inflight(): Promise<unknown>[] {
    const pending: Promise<unknown>[] = [];
    for (const state of states.values()) if (state.inflight !== null) pending.push(state.inflight);
    return pending;
  }

  function unsettledUnits(): number {
    let units = 0;
    for (const row of carried) units += row.consumed + row.overage;
    for (const state of states.values()) units += state.unsettled + state.unsettledOverage;
    return units;
  }

  return { view, commit, refill, settle, recheckExhausted, leasesExtended, inflight, unsettledUnits };
}

/** A quota's limit; a quota without one (rules forbid it) grants nothing rather than everything. */
function limitOf(rule: EntitlementRule): number {
  return rule.limit ?? 0;
}

function periodKey(key: { licenseId: string; feature: string; periodStartMs: number }): {
  licenseId: string;
  feature: string;
  periodStartMs: number;
} {
  return { licenseId: key.licenseId, feature: key.feature, periodStartMs: key.periodStartMs };
}
