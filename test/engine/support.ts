/**
 * Helpers for the counting engine's tests: a licence to hang counters on, rules, a clock the
 * test moves, a logger that records, a switchable outage, and the Check flow as the lead's
 * handler drives the Counters API.
 */
import { tmpdir } from "node:os";
import { sql, type Kysely, type KyselyPlugin, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryResult, type RootOperationNode, type UnknownRow } from "kysely";
import { createCounters, type CountersEngine } from "../../src/licensing/engine/counters-engine.js";
import type { EngineLogger, EngineOptions } from "../../src/licensing/engine/options.js";
import type { EntitlementRule } from "../../src/licensing/snapshot.js";
import { createStore } from "../../src/store/database.js";
import type { Database } from "../../src/store/schema.js";
import type { TestStore } from "../support/database.js";

/** 2026-03-15T12:00:00Z: mid-month, mid-day, so no test crosses a period by accident. */
export const T0 = Date.UTC(2026, 2, 15, 12, 0, 0);

export class FakeClock {
  constructor(public ms: number = T0) {}
  readonly now = (): number => this.ms;
  advance(ms: number): number {
    this.ms += ms;
    return this.ms;
  }
}

export async function seedLicense(db: Kysely<Database>, licenseId: string): Promise<void> {
  await db.insertInto("accounts").values({ id: `acct-${licenseId}`, name: licenseId }).execute();
  await db.insertInto("plans").values({ name: `plan-${licenseId}`, description: null }).execute();
  await db
    .insertInto("licenses")
    .values({
      id: licenseId,
      account_id: `acct-${licenseId}`,
      plan: `plan-${licenseId}`,
      status: "active",
      valid_from: null,
      valid_until: null,
      environments: [],
    })
    .execute();
}

const baseRule: EntitlementRule = {
  feature: "api-calls",
  kind: "quota",
  limit: 1000,
  period: "month",
  burst: null,
  overage: "block",
  failureMode: "fail_closed",
  roles: [],
  unitPrice: null,
};

export function quotaRule(limit: number, overrides: Partial<EntitlementRule> = {}): EntitlementRule {
  return { ...baseRule, limit, ...overrides };
}

export function rateRule(limit: number, period: "second" | "minute", burst: number | null = null): EntitlementRule {
  return { ...baseRule, feature: "requests", kind: "rate", limit, period, burst };
}

export function seatRule(limit: number, kind: "seats" | "capacity" = "seats"): EntitlementRule {
  return { ...baseRule, feature: kind === "seats" ? "editor" : "nodes", kind, limit, period: null };
}

export interface LogEntry {
  readonly level: "info" | "warn" | "error";
  readonly obj: object;
  readonly msg: string;
}

export function recordingLogger(): EngineLogger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  return {
    entries,
    info: (obj, msg) => entries.push({ level: "info", obj, msg }),
    warn: (obj, msg) => entries.push({ level: "warn", obj, msg }),
    error: (obj, msg) => entries.push({ level: "error", obj, msg }),
  };
}

/** A plugin that makes every query fail while `down` is true, as an unreachable server would. */
export class Outage implements KyselyPlugin {
  down = false;

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (this.down) throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    return args.node;
  }

  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}

export type TestEngine = CountersEngine & { logger: ReturnType<typeof recordingLogger> };

/** An engine driven by the test (no timers), on the given clock. */
export function testEngine(
  db: Kysely<Database>,
  clock: FakeClock,
  replicaId: string,
  overrides: Partial<EngineOptions> = {},
): TestEngine {
  const logger = recordingLogger();
  const engine = createCounters({ db, replicaId, now: clock.now, logger, autoRun: false, ...overrides });
  return Object.assign(engine, { logger });
}

/**
 * One Check of `quantity` units as the handler does it: read the view; if the lease is short and
 * the quota not exhausted, await a refill and read again; allow and commit when the units are
 * there, deny otherwise.
 */
export async function checkQuota(
  engine: CountersEngine,
  licenseId: string,
  rule: EntitlementRule,
  nowMs: number,
  quantity = 1,
): Promise<boolean> {
  let view = engine.quota(licenseId, rule, nowMs);
  if (view.localAvailable < quantity && !view.exhausted) view = await engine.refillQuota(licenseId, rule, quantity, nowMs);
  if (view.localAvailable < quantity) return false;
  engine.commit(licenseId, [{ kind: "quota", rule, quantity, overage: 0 }], nowMs);
  return true;
}

export interface CounterRow {
  used: number;
  leased: number;
  stranded: number;
  overage: number;
}

export async function counterRow(
  db: Kysely<Database>,
  licenseId: string,
  feature: string,
  periodStartMs: number,
): Promise<CounterRow | undefined> {
  return db
    .selectFrom("quota_counters")
    .select(["used", "leased", "stranded", "overage"])
    .where("license_id", "=", licenseId)
    .where("feature", "=", feature)
    .where("period_start", "=", new Date(periodStartMs))
    .executeTakeFirst();
}

export async function leaseAmounts(db: Kysely<Database>, licenseId: string): Promise<Record<string, number>> {
  const rows = await db
    .selectFrom("quota_leases")
    .select(["replica_id", "amount"])
    .where("license_id", "=", licenseId)
    .execute();
  return Object.fromEntries(rows.map((row) => [row.replica_id, row.amount]));
}

/**
 * Database handles for `count` replicas: on PGlite they share the one embedded database; on
 * PostgreSQL each gets a pool of its own on the test's database, as separate processes would.
 */
export async function replicaHandles(
  store: TestStore,
  count: number,
): Promise<{ handles: Kysely<Database>[]; close(): Promise<void> }> {
  const databaseUrl = store.databaseUrl;
  if (databaseUrl === undefined) {
    return { handles: Array.from({ length: count }, () => store.db), close: async () => {} };
  }
  const stores = await Promise.all(
    Array.from({ length: count }, () => createStore({ databaseUrl, dataDir: tmpdir(), poolMax: 3 })),
  );
  return {
    handles: stores.map((s) => s.db),
    close: async () => {
      await Promise.all(stores.map((s) => s.close()));
    },
  };
}

/** Yields to the event loop (I/O included), as real traffic arriving on sockets would. */
export function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export async function truncateCounters(db: Kysely<Database>): Promise<void> {
  await sql`truncate quota_leases, quota_counters, seat_leases, replicas`.execute(db);
}

/**
 * Lets background work (a round trip to Postgres) finish until `condition` holds; fails after
 * about `rounds` milliseconds of real time.
 */
export async function until(condition: () => boolean, rounds = 2000): Promise<void> {
  for (let i = 0; i < rounds; i += 1) {
    if (condition()) return;
    await nextMillisecond();
  }
  throw new Error(`condition still false after ${rounds} ms`);
}

/**
 * Paces simulated traffic at about one Check per real millisecond, so the injected clock (one
 * millisecond per Check) and real round trips keep the proportions of a real 1,000 Checks/s.
 */
export function nextMillisecond(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 1));
}
