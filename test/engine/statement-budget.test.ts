import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { periodStartMs } from "../../src/licensing/engine/period.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { checkQuota, counterRow, FakeClock, quotaRule, seedLicense, T0, testEngine, yieldToIo } from "./support.js";

const LICENSE = "lic-budget";

describe.each(testBackends())("statement budget on %s", (backend) => {
  let store: TestStore;

  beforeAll(async () => {
    store = await createTestStore(backend);
    await seedLicense(store.db, LICENSE);
  });
  afterAll(() => store.drop());

  it("10,000 allowed quota Checks on one replica cause at most 50 statements, settlement and heartbeats included", async () => {
    const rule = quotaRule(1_000_000);
    const clock = new FakeClock();
    let statements = 0;
    const engine = testEngine(store.db, clock, "budget", { onStatement: () => (statements += 1) });
    await engine.start();
    // 1,000 Checks per second of the injected clock: ten settle intervals, two heartbeats.
    for (let i = 0; i < 10_000; i += 1) {
      clock.advance(1);
      expect(await checkQuota(engine, LICENSE, rule, clock.ms)).toBe(true);
      await engine.tick();
      await yieldToIo();
    }
    await engine.flush();
    const stats = engine.stats();
    expect(statements).toBe(stats.statements);
    expect(statements).toBeLessThanOrEqual(50);
    expect(stats.unitsSettled).toBe(10_000);
    expect((await counterRow(store.db, LICENSE, "api-calls", periodStartMs("month", T0)))?.used).toBe(10_000);
    console.info(
      `[${backend}] 10,000 Checks: ${statements} statements (${stats.leasesTaken} leases, ${stats.refillsWaited} waited, ${stats.refillsPrewarmed} pre-warmed)`,
    );
    await engine.stop();
  }, 60_000);
});
