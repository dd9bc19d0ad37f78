import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { CounterUnavailableError } from "../../src/licensing/engine/errors.js";
import { periodStartMs } from "../../src/licensing/engine/period.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { counterRow, FakeClock, Outage, quotaRule, seatRule, seedLicense, T0, testEngine, truncateCounters } from "./support.js";

const LICENSE = "lic-failures";
const MONTH = periodStartMs("month", T0);

describe.each(testBackends())("when Postgres is unreachable, on %s", (backend) => {
  let store: TestStore;
  let clock: FakeClock;
  let outage: Outage;

  beforeAll(async () => {
    store = await createTestStore(backend);
    await seedLicense(store.db, LICENSE);
  });
  afterAll(() => store.drop());
  beforeEach(async () => {
    await truncateCounters(store.db);
    clock = new FakeClock();
    outage = new Outage();
  });

  it("refillQuota and acquireSeat reject, and a retry within a second is refused without a round trip", async () => {
    const engine = testEngine(store.db.withPlugin(outage), clock, "a");
    await engine.start();
    outage.down = true;
    await expect(engine.refillQuota(LICENSE, quotaRule(10), 1, clock.ms)).rejects.toMatchObject({ code: "ECONNREFUSED" });
    await expect(engine.acquireSeat(LICENSE, seatRule(2), "laptop", clock.ms)).rejects.toMatchObject({ code: "ECONNREFUSED" });
    const statements = engine.stats().statements;
    await expect(engine.refillQuota(LICENSE, quotaRule(10), 1, clock.ms)).rejects.toBeInstanceOf(CounterUnavailableError);
    await expect(engine.acquireSeat(LICENSE, seatRule(2), "laptop", clock.ms)).rejects.toBeInstanceOf(CounterUnavailableError);
    expect(engine.stats().statements).toBe(statements);
    clock.advance(1_000);
    outage.down = false;
    expect((await engine.refillQuota(LICENSE, quotaRule(10), 1, clock.ms)).localAvailable).toBeGreaterThanOrEqual(1);
    await engine.stop();
  });

  it("background passes warn with counts and retry; nothing consumed is lost", async () => {
    const rule = quotaRule(100);
    const engine = testEngine(store.db.withPlugin(outage), clock, "a");
    await engine.start();
    await engine.refillQuota(LICENSE, rule, 50, clock.ms);
    engine.commit(LICENSE, [{ kind: "quota", rule, quantity: 7, overage: 0 }], clock.ms);
    outage.down = true;
    for (let i = 0; i < 6; i += 1) {
      clock.advance(1_000);
      await engine.tick(); // never rejects
    }
    await expect(engine.flush()).rejects.toMatchObject({ code: "ECONNREFUSED" });
    const warnings = engine.logger.entries.filter((e) => e.level === "warn");
    expect(warnings.some((e) => e.msg.includes("background pass failed") && "failures" in e.obj)).toBe(true);
    expect(engine.stats().backgroundFailures).toBeGreaterThanOrEqual(6);
    outage.down = false;
    clock.advance(1_000);
    await engine.tick();
    expect(engine.logger.entries.some((e) => e.level === "info" && e.msg.includes("recovered"))).toBe(true);
    expect((await counterRow(store.db, LICENSE, "api-calls", MONTH))?.used).toBe(7);
    await engine.stop();
  });

  it("fail-open units settle once the database is back: into used, and overage past the limit", async () => {
    const rule = quotaRule(10, { failureMode: "fail_open" });
    const engine = testEngine(store.db.withPlugin(outage), clock, "a");
    await engine.start();
    const other = testEngine(store.db, clock, "b");
    await other.start();
    await other.refillQuota(LICENSE, rule, 4, clock.ms); // another replica holds 4 of the 10
    outage.down = true;
    await expect(engine.refillQuota(LICENSE, rule, 1, clock.ms)).rejects.toThrow();
    engine.recordFailOpen(LICENSE, rule, 9, clock.ms); // allowed while Postgres was away
    expect(engine.stats().failOpenUnitsPending).toBe(9);
    await expect(engine.flush()).rejects.toThrow();
    expect(engine.stats().failOpenUnitsPending).toBe(9);
    outage.down = false;
    await engine.flush();
    expect(engine.stats()).toMatchObject({ failOpenUnitsPending: 0, failOpenUnitsSettled: 9 });
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toEqual({ used: 6, leased: 4, stranded: 0, overage: 3 });
    await engine.stop();
    await other.stop();
  });

  it("stop() with Postgres gone resolves, and logs the fail-open units it could not settle with their counts", async () => {
    const rule = quotaRule(10, { failureMode: "fail_open" });
    const engine = testEngine(store.db.withPlugin(outage), clock, "a");
    await engine.start();
    outage.down = true;
    engine.recordFailOpen(LICENSE, rule, 3, clock.ms);
    engine.recordFailOpen(LICENSE, rule, 2, clock.ms);
    await engine.stop();
    const logged = engine.logger.entries.find((e) => e.level === "error" && e.msg.includes("fail-open units"));
    expect(logged?.obj).toMatchObject({
      units: 5,
      counters: [{ licenseId: LICENSE, feature: "api-calls", periodStart: new Date(MONTH).toISOString(), quantity: 5 }],
    });
    await expect(engine.refillQuota(LICENSE, rule, 1, clock.ms)).rejects.toThrow(/stopped/);
  });
});
