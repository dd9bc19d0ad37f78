/**
 * Prometheus metrics on a registry of our own (never prom-client's global one), so tests and
 * several apps in one process never share series.
 *
 * Labels are bounded by construction: decision (allow, deny), reason (the Reason enum's names),
 * rpc (the gRPC paths of the served methods), code (gRPC status names). Never a licence, key,
 * account or replica id: those are unbounded and belong in the decision log.
 *
 * Hot path: `recordDecision` and `observeRpc` write plain slots bound once per label value
 * (fast-metrics.ts; prom-client's `labels().inc()` hashes its labels per call): a Map lookup
 * and an add, measured at tens of nanoseconds.
 * Everything the engine, decision log, pool and other components count themselves is read
 * when Prometheus scrapes (`collect` callbacks), never pushed per event.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from "prom-client";
import { FastCounter, FastHistogram, type CounterSlot, type HistogramSlot } from "./fast-metrics.js";
import type { DecisionLogStats } from "../licensing/decision-log.js";
import type { EngineStats } from "../licensing/engine/index.js";
import type { DecisionRecorder } from "../licensing/check.js";
import type { GrpcCallObserver } from "../server/grpc-server.js";

export interface MetricsOptions {
  /** Prefix of our own series. Default "licensing_". Process metrics keep their standard names. */
  readonly prefix?: string;
  /** Also collect process and Node.js runtime metrics (CPU, memory, event loop lag, GC). Default true. */
  readonly processMetrics?: boolean;
}

/** Counts of the PostgreSQL pool (pg.Pool totalCount, idleCount, waitingCount). */
export interface PoolStats {
  readonly total: number;
  readonly idle: number;
  readonly waiting: number;
}

/** One field of a registered source: a gauge (a level) or a counter (a total that only grows). */
export interface SourceField {
  readonly help: string;
  readonly type?: "gauge" | "counter";
}

export interface Metrics {
  readonly registry: Registry;
  /** Counts one decision. `reason` is a Reason name ("OK", "QUOTA_EXHAUSTED"). */
  recordDecision(allow: boolean, reason: string): void;
  /** A DecisionRecorder that counts each decision, then hands it to `next` (the decision log). */
  countingRecorder(next: DecisionRecorder): DecisionRecorder;
  /** Pass as createGrpcServer's `onCall`: latency per RPC and status code. */
  readonly observeRpc: GrpcCallObserver;
  /** Reads the counting engine's stats on every scrape. Call once. */
  watchEngine(stats: () => EngineStats): void;
  /** Reads the decision log's stats on every scrape. Call once. */
  watchDecisionLog(stats: () => DecisionLogStats): void;
  /** Reads the PostgreSQL pool's counts on every scrape (undefined: no pool, e.g. PGlite). Call once. */
  watchPool(stats: () => PoolStats | undefined): void;
  /**
   * Exposes numbers another component keeps (e.g. the metering spool) as `<prefix><name>_<field>`:
   * `read` is called on every scrape and must be cheap; fields it omits are left unchanged.
   * Counter fields must be running totals (the difference since the last scrape is added).
   * @throws Error when a resulting metric name is invalid or already registered.
   */
  registerSource(name: string, read: () => Readonly<Record<string, number>>, fields: Readonly<Record<string, SourceField>>): void;
}

/** 50 µs to 1 s: a memory-only Check is tens of µs, a lease round trip ms, a timeout 1 s. */
export const RPC_BUCKETS_SECONDS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** gRPC status names by code, the `code` label's values. */
const GRPC_CODES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
] as const;

/** Distinct reason and rpc label values kept; beyond, "other" (a guard: both are enums today). */
const MAX_LABEL_VALUES = 64;
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const prefix = options.prefix ?? "licensing_";
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });

  const decisions = new FastCounter<"decision" | "reason">(
    `${prefix}decisions_total`,
    "Check decisions, by decision (allow, deny) and reason.",
    registry,
  );
  const rpcDuration = new FastHistogram<"rpc" | "code">(
    `${prefix}rpc_duration_seconds`,
    "Time from a unary gRPC call's arrival to its answer, by RPC path and status code.",
    RPC_BUCKETS_SECONDS,
    registry,
  );

  /** Per reason: [allow slot, deny slot]. */
  const decisionSlots = new Map<string, [CounterSlot, CounterSlot]>();
  function decisionSlotsFor(reason: string): [CounterSlot, CounterSlot] {
    let slots = decisionSlots.get(reason);
    if (slots === undefined) {
      const label = decisionSlots.size < MAX_LABEL_VALUES ? reason : "other";
      slots = [decisions.slot({ decision: "allow", reason: label }), decisions.slot({ decision: "deny", reason: label })];
      decisionSlots.set(reason, slots);
    }
    return slots;
  }

  /** Per rpc: one slot per status code, made on first use. */
  const rpcSlots = new Map<string, (HistogramSlot | undefined)[]>();
  function rpcSlot(rpc: string, code: number): HistogramSlot {
    let byCode = rpcSlots.get(rpc);
    if (byCode === undefined) {
      byCode = [];
      rpcSlots.set(rpc, byCode);
    }
    const index = code >= 0 && code < GRPC_CODES.length ? code : 2; // UNKNOWN
    let slot = byCode[index];
    if (slot === undefined) {
      const rpcLabel = rpcSlots.size <= MAX_LABEL_VALUES ? rpc : "other";
      slot = rpcDuration.slot({ rpc: rpcLabel, code: GRPC_CODES[index] ?? "UNKNOWN" });
      byCode[index] = slot;
    }
    return slot;
  }

  function recordDecision(allow: boolean, reason: string): void {
    const slots = decisionSlotsFor(reason);
    (allow ? slots[0] : slots[1]).value += 1;
  }

  const watch = createScrapeWatchers(registry, prefix);

  return {
    registry,
    recordDecision,
    countingRecorder: (next) => ({
      record(entry) {
        recordDecision(entry.allow, entry.reason);
        next.record(entry);
      },
    }),
    observeRpc: (rpc, code, durationMs) => rpcSlot(rpc, code).observe(durationMs / 1000),
    watchEngine: watch.engine,
    watchDecisionLog: watch.decisionLog,
    watchPool: watch.pool,
    registerSource: watch.source,
  };
}

/** Counters and gauges whose values are read from a component's own stats when scraped. */
function createScrapeWatchers(registry: Registry, prefix: string) {
  /** A counter that follows a running total read at scrape time (adds the growth; a drop resets it). */
  function totalCounter(name: string, help: string, read: () => number | undefined): void {
    let last = 0;
    new Counter({
      name: `${prefix}${name}`,
      help,
      registers: [registry],
      collect() {
        const value = read();
        if (value === undefined) return;
        if (value < last) {
          this.reset(); // the source restarted; start over rather than go negative
          last = 0;
        }
        if (value > last) this.inc(value - last);
        last = value;
      },
    });
  }

  /** A counter with one label whose values each follow a running total. */
  function labelledTotals<L extends string>(name: string, help: string, label: string, read: () => Readonly<Record<L, number>> | undefined): void {
    const last = new Map<string, number>();
    new Counter({
      name: `${prefix}${name}`,
      help,
      labelNames: [label],
      registers: [registry],
      collect() {
        const values = read();
        if (values === undefined) return;
        for (const [key, value] of Object.entries(values) as [string, number][]) {
          const before = last.get(key) ?? 0;
          const child = this.labels(key);
          if (value < before) {
            this.remove(key);
            if (value > 0) this.labels(key).inc(value);
          } else if (value > before) child.inc(value - before);
          else child.inc(0); // make the series exist at 0
          last.set(key, value);
        }
      },
    });
  }

  /** `aggregator`: how WORKERS=N sums this gauge across workers (cluster-metrics.ts). Default sum. */
  function gauge(name: string, help: string, read: () => number | undefined, aggregator: "sum" | "max" = "sum"): void {
    new Gauge({
      name: `${prefix}${name}`,
      help,
      aggregator,
      registers: [registry],
      collect() {
        const value = read();
        if (value !== undefined) this.set(value);
      },
    });
  }

  return {
    engine(stats: () => EngineStats): void {
      // One stats() copy per scrape, shared by every series below.
      let snapshot: EngineStats | undefined;
      let takenAt = -1;
      const read = (): EngineStats => {
        const now = performance.now();
        if (snapshot === undefined || now - takenAt > 100) {
          snapshot = stats();
          takenAt = now;
        }
        return snapshot;
      };
      labelledTotals("lease_refills_total", "Quota lease refills: waited (a Check waited on Postgres) or prewarmed (started before units ran out).", "mode", () => {
        const s = read();
        return { waited: s.refillsWaited, prewarmed: s.refillsPrewarmed };
      });
      totalCounter("leases_taken_total", "Lease round trips that granted at least one unit.", () => read().leasesTaken);
      labelledTotals("quota_units_total", "Quota units by what happened to them.", "event", () => {
        const s = read();
        return {
          leased: s.unitsLeased,
          settled: s.unitsSettled,
          returned: s.unitsReturned,
          overage: s.overageSettled,
          forfeited: s.unitsForfeited,
          stranded: s.unitsStranded,
          unleased: s.unitsUnleased,
        };
      });
      labelledTotals("seat_events_total", "Seat and capacity leases by event.", "event", () => {
        const s = read();
        return { acquired: s.seatAcquisitions, denied: s.seatsDenied, renewed: s.seatRenewals, lost: s.seatsLost };
      });
      totalCounter("engine_statements_total", "SQL statements the counting engine sent (BEGIN and COMMIT included).", () => read().statements);
      totalCounter("engine_background_failures_total", "Background passes (settle, heartbeat, pre-warm) that failed.", () => read().backgroundFailures);
      gauge("fail_open_units_pending", "Units allowed fail-open while Postgres was away, not yet settled.", () => read().failOpenUnitsPending);
      totalCounter("fail_open_units_settled_total", "Fail-open units settled once Postgres was back.", () => read().failOpenUnitsSettled);
      // Every worker sees the same set of live replicas: max, not sum.
      gauge("live_replicas", "Live replicas at the last heartbeat, this one included.", () => read().liveReplicas, "max");
    },

    decisionLog(stats: () => DecisionLogStats): void {
      gauge("decision_log_queued", "Decision-log rows held in memory, not yet written.", () => stats().queued);
      totalCounter("decision_log_written_total", "Decision-log rows written.", () => stats().written);
      totalCounter("decision_log_dropped_total", "Decisions the log dropped (queue full, invalid, after stop).", () => stats().dropped);
      totalCounter("decision_log_flush_failures_total", "Decision-log flushes that failed (retried).", () => stats().flushFailures);
    },

    pool(stats: () => PoolStats | undefined): void {
      gauge("db_pool_connections", "PostgreSQL pool connections, open.", () => stats()?.total);
      gauge("db_pool_idle_connections", "PostgreSQL pool connections, idle.", () => stats()?.idle);
      gauge("db_pool_waiting_requests", "Queries waiting for a pool connection.", () => stats()?.waiting);
    },

    source(name: string, read: () => Readonly<Record<string, number>>, fields: Readonly<Record<string, SourceField>>): void {
      let values: Readonly<Record<string, number>> = {};
      let takenAt = -1;
      const value = (field: string): number | undefined => {
        const now = performance.now();
        if (takenAt < 0 || now - takenAt > 100) {
          values = read();
          takenAt = now;
        }
        return values[field];
      };
      for (const [field, spec] of Object.entries(fields)) {
        const metric = `${name}_${field}`;
        if (!NAME.test(`${prefix}${metric}`)) throw new Error(`metrics source "${name}": "${prefix}${metric}" is not a valid metric name`);
        if (spec.type === "counter") totalCounter(metric, spec.help, () => value(field));
        else gauge(metric, spec.help, () => value(field));
      }
    },
  };
}
