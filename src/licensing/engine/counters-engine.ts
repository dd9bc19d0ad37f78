/**
 * The counting engine behind Check: quota leases, rate buckets, seat leases, fail-open units
 * and the replica registry, behind the `Counters` seam (see ../counters.ts).
 *
 * Reads and commits are synchronous and allocation-free in steady state; Postgres is touched by
 * lease refills (pre-warmed in the background), seat acquisitions, and two batched background
 * passes: settle (every settleIntervalMs: consumption, overage, fail-open units, seat renewals,
 * one statement each when there is something to write) and heartbeat (every heartbeatIntervalMs:
 * one statement that also extends this replica's leases and sweeps vanished replicas' leases).
 *
 * Lifecycle: `start()` registers the replica and starts the loop; `stop()` settles, gives back
 * every unused lease unit, deregisters, and resolves even when Postgres is gone (what it could
 * not write is logged with counts).
 */
import { releaseLeases } from "../../store/leases.js";
import type { Consumption, Counters, QuotaView, RateView, SeatView } from "../counters.js";
import type { EntitlementRule } from "../snapshot.js";
import { createBackgroundLoop, describe, type BackgroundLoop, type Pass } from "./background.js";
import { createFailOpenLedger } from "./fail-open.js";
import { emptyStats, resolveEngineOptions, type EngineOptions, type EngineStats } from "./options.js";
import { createQuotaLeases } from "./quota-leases.js";
import { createRateBuckets } from "./rate-buckets.js";
import { createReplicaRegistry } from "./replica-registry.js";
import { createSeats } from "./seats.js";
import { createSerialQueue } from "./serial-queue.js";
import { StatementCounter } from "./statement-counter.js";

export interface CountersEngine extends Counters {
  /**
   * Registers the replica (stranding leases an earlier process left under its id), heartbeats
   * once, and starts the background loop when `autoRun`. Resolves even when Postgres is
   * unreachable (logged; the heartbeat pass keeps trying, and refills wait for registration).
   */
  start(): Promise<void>;
  /**
   * Stops the loop and new round trips, settles what was consumed, gives back every unused lease
   * unit, and deregisters. Never rejects; what could not be written is logged at error with counts.
   */
  stop(): Promise<void>;
  /** A snapshot of the counters, for metrics. */
  stats(): EngineStats;
  /** Live replicas at the last heartbeat, this one included (at least 1). Cheap: for every Check. */
  liveReplicas(): number;
  /** Runs the background passes due at the injected clock's now (the timer calls this too). */
  tick(): Promise<void>;
  /** Runs the settle pass now. Rejects when Postgres failed (nothing is lost; it is kept for the next pass). */
  flush(): Promise<void>;
  /** Runs the heartbeat pass now (heartbeat, lease extension, sweep). Rejects when Postgres failed. */
  heartbeat(): Promise<void>;
}

export function createCounters(engineOptions: EngineOptions): CountersEngine {
  const options = resolveEngineOptions(engineOptions);
  const stats = emptyStats();
  const countStatements = (count: number): void => {
    for (let i = 0; i < count; i += 1) {
      stats.statements += 1;
      options.onStatement?.();
    }
  };
  const db = options.db.withPlugin(new StatementCounter(() => countStatements(1)));
  let stopped = false;
  let stopping: Promise<void> | undefined;

  // Each quota retries at most once a second, but many quotas fail together in an outage.
  const leaseFailures = createThrottledWarning(options, "background quota leases failed; Checks will refill on demand");
  const serial = createSerialQueue();
  const registry = createReplicaRegistry(db, options, stats, serial);
  const isStopped = (): boolean => stopped;
  const quotas = createQuotaLeases({
    db,
    options,
    stats,
    liveReplicas: registry.live,
    ready: registry.ready,
    serial,
    stopped: isStopped,
    backgroundFailed: (what, error) => {
      stats.backgroundFailures += 1;
      leaseFailures.report(what, error);
    },
  });
  const rates = createRateBuckets(registry.live);
  const seats = createSeats({ db, options, stats, ready: registry.ready, stopped: isStopped, countStatements });
  const failOpen = createFailOpenLedger(db, stats);

  async function settlePass(nowMs: number): Promise<void> {
    const results = await Promise.allSettled([
      quotas.settle(nowMs),
      failOpen.settle(),
      seats.flushRenewals(),
    ]);
    quotas.recheckExhausted(nowMs);
    rates.prune(nowMs);
    seats.prune(nowMs);
    const failure = results.find((result) => result.status === "rejected");
    if (failure !== undefined) throw failure.reason;
  }

  async function heartbeatPass(): Promise<void> {
    const beat = await registry.heartbeat();
    if (beat !== undefined) quotas.leasesExtended(beat.leaseExpiresAtMs, beat.answeredAtMs);
  }

  const settle: Pass = { name: "settle", intervalMs: options.settleIntervalMs, run: settlePass };
  const beat: Pass = { name: "heartbeat", intervalMs: options.heartbeatIntervalMs, run: heartbeatPass };
  const loop: BackgroundLoop = createBackgroundLoop([settle, beat], options.now, options.logger, () => {
    stats.backgroundFailures += 1;
  });

  async function start(): Promise<void> {
    try {
      await registry.ready();
      await heartbeatPass();
    } catch (error) {
      options.logger.warn({ err: describe(error) }, "could not register the replica yet; retrying in the background");
    }
    if (options.autoRun && !stopped) loop.startTimer();
  }

  function stop(): Promise<void> {
    stopping ??= shutdown();
    return stopping;
  }

  async function shutdown(): Promise<void> {
    stopped = true;
    await loop.stop();
    await Promise.allSettled([...quotas.inflight(), ...seats.inflight()]);
    const settled = await attempt("settle quota consumption", () => quotas.settle(options.now()));
    await attempt("settle fail-open units", () => failOpen.settle());
    await attempt("write seat renewals", () => seats.flushRenewals());
    if (settled) {
      // Everything consumed is settled, so whatever the leases still hold is unused.
      await attempt("return unused lease units", async () => {
        stats.unitsReturned += await serial.run(() => releaseLeases(db, options.replicaId));
      });
    }
    await attempt("deregister the replica", () => registry.deregister());
    reportUnsettled(settled);
  }

  /** Runs one shutdown step; logs and reports false when it failed. */
  async function attempt(what: string, step: () => Promise<void>): Promise<boolean> {
    try {
      await step();
      return true;
    } catch (error) {
      options.logger.error({ step: what, err: describe(error) }, "shutdown step failed");
      return false;
    }
  }

  function reportUnsettled(settled: boolean): void {
    const pending = failOpen.pending();
    if (pending.length > 0) {
      options.logger.error(
        {
          units: stats.failOpenUnitsPending,
          counters: pending.map((row) => ({
            licenseId: row.licenseId,
            feature: row.feature,
            periodStart: new Date(row.periodStartMs).toISOString(),
            quantity: row.quantity,
          })),
        },
        "fail-open units could not be settled before shutdown; bill them from this record",
      );
    }
    if (!settled) {
      options.logger.error(
        { units: quotas.unsettledUnits() },
        "quota consumption could not be settled before shutdown; its leases will be stranded when they expire",
      );
    }
  }

  return {
    quota(licenseId: string, rule: EntitlementRule, nowMs: number): QuotaView {
      return quotas.view(licenseId, rule, nowMs);
    },
    rate(licenseId: string, rule: EntitlementRule, nowMs: number): RateView {
      return rates.view(licenseId, rule, nowMs);
    },
    seat(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): SeatView {
      return seats.view(licenseId, rule, instanceId, nowMs);
    },
    commit(licenseId: string, consumption: readonly Consumption[], nowMs: number): void {
      for (const item of consumption) {
        switch (item.kind) {
          case "quota":
            quotas.commit(licenseId, item.rule, item.quantity, item.overage, nowMs);
            break;
          case "rate":
            rates.commit(licenseId, item.rule, item.quantity, nowMs);
            break;
          case "seat":
            seats.commit(licenseId, item.rule, item.instanceId, nowMs);
            break;
        }
      }
    },
    refillQuota: quotas.refill,
    acquireSeat: seats.acquire,
    recordFailOpen: failOpen.record,
    start,
    stop,
    stats: () => ({ ...stats }),
    liveReplicas: registry.live,
    tick: loop.tick,
    flush: () => settlePass(options.now()),
    heartbeat: heartbeatPass,
  };
}

/** Warns about a kind of failure at most once per interval, with how many happened since. */
function createThrottledWarning(
  options: { readonly now: () => number; readonly logger: EngineOptions["logger"] },
  message: string,
  intervalMs = 30_000,
): { report(what: string, error: unknown): void } {
  let loggedAtMs = Number.NEGATIVE_INFINITY;
  let since = 0;
  return {
    report(what, error) {
      since += 1;
      const nowMs = options.now();
      if (nowMs - loggedAtMs < intervalMs) return;
      options.logger.warn({ what, failures: since, err: describe(error) }, message);
      loggedAtMs = nowMs;
      since = 0;
    },
  };
}
