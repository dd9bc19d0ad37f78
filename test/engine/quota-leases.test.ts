import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { periodStartMs } from "../../src/licensing/engine/period.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import {
  checkQuota,
  counterRow,
  FakeClock,
  leaseAmounts,
  quotaRule,
  seedLicense,
  T0,
  testEngine,
  truncateCounters,
  nextMillisecond,
  until,
  yieldToIo,
  type TestEngine,
} from "./support.js";

const LICENSE = "lic-quota";
const MONTH = periodStartMs("month", T0);

describe.each(testBackends())("quota leases on %s", (backend) => {
  let store: TestStore;
  let clock: FakeClock;
  const engines: TestEngine[] = [];

  const engine = (replicaId: string, overrides: Parameters<typeof testEngine>[3] = {}): TestEngine => {
    const made = testEngine(store.db, clock, replicaId, overrides);
    engines.push(made);
    return made;
  };

  beforeAll(async () => {
    store = await createTestStore(backend);
    await seedLicense(store.db, LICENSE);
  });
  afterAll(() => store.drop());
  beforeEach(async () => {
    await Promise.all(engines.splice(0).map((e) => e.stop()));
    await truncateCounters(store.db);
    clock = new FakeClock();
  });

  it("a lease never grants past the limit, and says exhausted when nothing is left", async () => {
    const rule = quotaRule(10);
    const a = engine("a");
    await a.start();
    const view = await a.refillQuota(LICENSE, rule, 25, clock.ms);
    expect(view.localAvailable).toBe(10);
    expect(view.exhausted).toBe(true);
    expect(view.remaining).toBe(10);
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toEqual({ used: 0, leased: 10, stranded: 0, overage: 0 });
    const b = engine("b");
    await b.start();
    const other = await b.refillQuota(LICENSE, rule, 1, clock.ms);
    expect(other.localAvailable).toBe(0);
    expect(other.exhausted).toBe(true);
    expect(await leaseAmounts(store.db, LICENSE)).toEqual({ a: 10 });
  });

  it("concurrent refills for one quota share one round trip", async () => {
    const a = engine("a");
    await a.start();
    const before = a.stats().statements;
    const views = await Promise.all(Array.from({ length: 20 }, () => a.refillQuota(LICENSE, quotaRule(1000), 1, clock.ms)));
    expect(views.every((v) => v.localAvailable >= 1)).toBe(true);
    // The counter row did not exist: one insert, then one lease statement.
    expect(a.stats().statements - before).toBe(2);
    expect(a.stats().leasesTaken).toBe(1);
  });

  it("a burst of Checks on a cold quota is served by a few round trips, not a chain of small blocks", async () => {
    const rule = quotaRule(1_000_000);
    const a = engine("a");
    await a.start();
    // Each Check as the handler runs it: decide again after every refill until it has its unit.
    const checkUntilAllowed = async (): Promise<number> => {
      for (let round = 1; round <= 100; round += 1) {
        if (await checkQuota(a, LICENSE, rule, clock.ms)) return round;
      }
      throw new Error("no unit after 100 rounds");
    };
    const rounds = await Promise.all(Array.from({ length: 64 }, checkUntilAllowed));
    expect(a.stats().unitsLeased).toBeGreaterThanOrEqual(64);
    // The statement is sized as it goes out, with every waiting Check's unit in it: one round
    // trip here (a chain of small blocks took 4, and Checks up to 4 rounds each, before).
    expect(a.stats().leasesTaken).toBeLessThanOrEqual(2);
    expect(Math.max(...rounds)).toBeLessThanOrEqual(2);
  });

  it("the last units are shared: a replica leases at most a fair share of what is left", async () => {
    const rule = quotaRule(100);
    const a = engine("a", { minBlock: 1000, maxBlock: 1000 });
    const b = engine("b", { minBlock: 1000, maxBlock: 1000 });
    await a.start();
    await b.start();
    await a.heartbeat();
    expect(a.stats().liveReplicas).toBe(2);
    // a wants a block of 1000 but takes at most 100 / (2 × 2 live replicas) = 25.
    const first = await a.refillQuota(LICENSE, rule, 1, clock.ms);
    expect(first.localAvailable).toBe(25);
    expect(first.exhausted).toBe(false);
    const second = await b.refillQuota(LICENSE, rule, 1, clock.ms);
    expect(second.localAvailable).toBeGreaterThan(0);
    expect(second.localAvailable).toBeLessThanOrEqual(Math.ceil(75 / 2));
    // Whatever the rate, the quota ends up spread, and never over the limit.
    let admitted = 0;
    for (let i = 0; i < 300; i += 1) {
      clock.advance(1);
      if (await checkQuota(i % 2 === 0 ? a : b, LICENSE, rule, clock.ms)) admitted += 1;
    }
    expect(admitted).toBe(100);
    expect(a.stats().unitsLeased).toBeGreaterThan(25);
    expect(b.stats().unitsLeased).toBeGreaterThan(25);
  });

  it("pre-warming: in steady state consumption never waits on a refill", async () => {
    const rule = quotaRule(1_000_000);
    const a = engine("a");
    await a.start();
    // Warm up: the rate estimate ramps the block size within a few leases.
    for (let i = 0; i < 2000; i += 1) {
      clock.advance(1);
      expect(await checkQuota(a, LICENSE, rule, clock.ms)).toBe(true);
      await a.tick();
      await yieldToIo();
    }
    const waitedBefore = a.stats().refillsWaited;
    const prewarmedBefore = a.stats().refillsPrewarmed;
    // Steady state, paced like real traffic (1,000 Checks/s on both clocks): never an empty lease.
    for (let i = 0; i < 3000; i += 1) {
      clock.advance(1);
      const view = a.quota(LICENSE, rule, clock.ms);
      expect(view.localAvailable).toBeGreaterThanOrEqual(1);
      a.commit(LICENSE, [{ kind: "quota", rule, quantity: 1, overage: 0 }], clock.ms);
      void a.tick();
      await nextMillisecond();
    }
    expect(a.stats().refillsWaited).toBe(waitedBefore);
    expect(a.stats().refillsPrewarmed).toBeGreaterThan(prewarmedBefore);
  });

  it("settlement writes every quota in one statement, and stop() gives back unused units", async () => {
    const a = engine("a");
    await a.start();
    const features = ["f1", "f2", "f3"];
    for (const feature of features) {
      const rule = quotaRule(1000, { feature });
      // 100 leased, 7 spent: far above the pre-warm mark, so nothing else is on the wire.
      await a.refillQuota(LICENSE, rule, 100, clock.ms);
      a.commit(LICENSE, [{ kind: "quota", rule, quantity: 7, overage: 0 }], clock.ms);
    }
    const before = a.stats().statements;
    await a.flush();
    expect(a.stats().statements - before).toBe(1);
    for (const feature of features) {
      const row = await counterRow(store.db, LICENSE, feature, MONTH);
      expect(row?.used).toBe(7);
      expect(row?.leased).toBe(93);
    }
    await a.stop();
    for (const feature of features) {
      expect(await counterRow(store.db, LICENSE, feature, MONTH)).toEqual({ used: 7, leased: 0, stranded: 0, overage: 0 });
    }
    expect(await leaseAmounts(store.db, LICENSE)).toEqual({});
    const replicas = await store.db.selectFrom("replicas").selectAll().execute();
    expect(replicas).toEqual([]);
  });

  it("a quota idle for idleReturnMs gives its unused units back", async () => {
    const rule = quotaRule(1000);
    const a = engine("a", { idleReturnMs: 5_000 });
    await a.start();
    await a.refillQuota(LICENSE, rule, 50, clock.ms);
    a.commit(LICENSE, [{ kind: "quota", rule, quantity: 2, overage: 0 }], clock.ms);
    clock.advance(6_000);
    await a.flush();
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toEqual({ used: 2, leased: 0, stranded: 0, overage: 0 });
    expect(a.quota(LICENSE, rule, clock.ms).localAvailable).toBe(0);
  });

  it("allow_and_bill past the limit records overage", async () => {
    const rule = quotaRule(5, { overage: "allow_and_bill" });
    const a = engine("a");
    await a.start();
    const view = await a.refillQuota(LICENSE, rule, 5, clock.ms);
    expect(view.localAvailable).toBe(5);
    a.commit(LICENSE, [{ kind: "quota", rule, quantity: 5, overage: 0 }], clock.ms);
    const exhausted = await a.refillQuota(LICENSE, rule, 1, clock.ms);
    expect(exhausted.exhausted).toBe(true);
    // The decision allows past the limit and says so: quantity 3, all of it overage.
    a.commit(LICENSE, [{ kind: "quota", rule, quantity: 3, overage: 3 }], clock.ms);
    await a.flush();
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toEqual({ used: 5, leased: 0, stranded: 0, overage: 3 });
    expect(a.stats().overageSettled).toBe(3);
  });

  it("a new period starts a new counter row; the old period is settled and its unused units returned", async () => {
    const rule = quotaRule(100, { period: "hour" });
    const hour = periodStartMs("hour", clock.ms);
    clock.ms = hour + 3_600_000 - 2_000; // two seconds before the hour ends
    const a = engine("a");
    await a.start();
    await a.refillQuota(LICENSE, rule, 20, clock.ms);
    a.commit(LICENSE, [{ kind: "quota", rule, quantity: 4, overage: 0 }], clock.ms);
    clock.ms = hour + 3_600_000; // the next hour, exactly
    const view = await a.refillQuota(LICENSE, rule, 1, clock.ms);
    expect(view.resetsAtMs).toBe(hour + 2 * 3_600_000);
    a.commit(LICENSE, [{ kind: "quota", rule, quantity: 1, overage: 0 }], clock.ms);
    await a.flush();
    expect(await counterRow(store.db, LICENSE, "api-calls", hour)).toEqual({ used: 4, leased: 0, stranded: 0, overage: 0 });
    const next = await counterRow(store.db, LICENSE, "api-calls", hour + 3_600_000);
    expect(next?.used).toBe(1);
  });

  it("an exhausted quota finds units another replica gave back, rechecking at most once per interval", async () => {
    const rule = quotaRule(10);
    const a = engine("a");
    const b = engine("b");
    await a.start();
    await b.start();
    await a.refillQuota(LICENSE, rule, 10, clock.ms);
    expect((await b.refillQuota(LICENSE, rule, 1, clock.ms)).exhausted).toBe(true);
    await a.stop(); // gives all 10 back
    const before = b.stats().statements;
    expect(b.quota(LICENSE, rule, clock.ms).exhausted).toBe(true);
    expect((await b.refillQuota(LICENSE, rule, 1, clock.ms)).localAvailable).toBe(0);
    expect(b.stats().statements).toBe(before); // within the recheck interval: no round trip
    clock.advance(1_000);
    const view = b.quota(LICENSE, rule, clock.ms);
    expect(view.exhausted).toBe(true);
    await b.tick(); // the settle pass rechecks quotas that Checks found exhausted
    await until(() => b.quota(LICENSE, rule, clock.ms).localAvailable > 0);
    expect(b.quota(LICENSE, rule, clock.ms).localAvailable).toBeGreaterThan(0);
    expect(b.quota(LICENSE, rule, clock.ms).exhausted).toBe(false);
  });
});
