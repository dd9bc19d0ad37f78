import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { FakeClock, rateRule, seedLicense, testEngine } from "./support.js";

const LICENSE = "lic-rate";

describe.each(testBackends())("rate buckets on %s", (backend) => {
  let store: TestStore;

  beforeAll(async () => {
    store = await createTestStore(backend);
    await seedLicense(store.db, LICENSE);
  });
  afterAll(() => store.drop());

  it("a replica's bucket holds limit and burst divided by the live replicas; the share halves when a second one is live", async () => {
    const clock = new FakeClock();
    const rule = rateRule(100, "second", 200);
    const a = testEngine(store.db, clock, "a");
    await a.start();
    expect(a.rate(LICENSE, rule, clock.ms)).toMatchObject({ capacity: 200, refillPerSecond: 100, tokens: 200 });
    const b = testEngine(store.db, clock, "b");
    await b.start();
    expect(b.rate(LICENSE, rule, clock.ms)).toMatchObject({ capacity: 100, refillPerSecond: 50 });
    clock.advance(5_000);
    await a.heartbeat();
    expect(a.rate(LICENSE, rule, clock.ms)).toMatchObject({ capacity: 100, refillPerSecond: 50, tokens: 100 });
    // b leaves; after its entry is gone, a takes the whole limit again at its next heartbeat.
    await b.stop();
    clock.advance(5_000);
    await a.heartbeat();
    expect(a.rate(LICENSE, rule, clock.ms)).toMatchObject({ capacity: 200, refillPerSecond: 100 });
    await a.stop();
  });

  it("tokens refill lazily from the clock, per second or per minute, up to the burst", async () => {
    const clock = new FakeClock();
    const perMinute = rateRule(60, "minute");
    const engine = testEngine(store.db, clock, "solo");
    await engine.start();
    expect(engine.rate(LICENSE, perMinute, clock.ms).tokens).toBe(60);
    engine.commit(LICENSE, [{ kind: "rate", rule: perMinute, quantity: 60 }], clock.ms);
    expect(engine.rate(LICENSE, perMinute, clock.ms).tokens).toBe(0);
    clock.advance(1_500);
    expect(engine.rate(LICENSE, perMinute, clock.ms).tokens).toBeCloseTo(1.5, 9);
    clock.advance(10 * 60_000);
    expect(engine.rate(LICENSE, perMinute, clock.ms).tokens).toBe(60);
    await engine.stop();
  });
});
