import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { periodStartMs } from "../../src/licensing/engine/period.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { checkQuota, counterRow, FakeClock, quotaRule, replicaHandles, seedLicense, T0, testEngine, yieldToIo } from "./support.js";

const LICENSE = "lic-race";

describe.each(testBackends())("quota exactness across replicas on %s", (backend) => {
  let store: TestStore;

  beforeAll(async () => {
    store = await createTestStore(backend);
    await seedLicense(store.db, LICENSE);
  });
  afterAll(() => store.drop());

  it("three engines racing 50,000 consume attempts on a quota of 10,000 admit exactly 10,000", async () => {
    const rule = quotaRule(10_000);
    const clock = new FakeClock();
    const { handles, close } = await replicaHandles(store, 3);
    const engines = handles.map((db, i) => testEngine(db, clock, `replica-${i}`));
    await Promise.all(engines.map((e) => e.start()));
    await Promise.all(engines.map((e) => e.heartbeat()));
    expect(engines.map((e) => e.stats().liveReplicas)).toEqual([3, 3, 3]);
    expect(engines.map((e) => e.liveReplicas())).toEqual([3, 3, 3]);

    const attempts = 50_000;
    const workersPerEngine = 4;
    let next = 0;
    let admitted = 0;
    // Each worker is one stream of Checks on one replica; all of them share the attempt budget.
    const worker = async (engine: (typeof engines)[number]): Promise<void> => {
      while (next < attempts) {
        next += 1;
        clock.advance(1);
        if (await checkQuota(engine, LICENSE, rule, clock.ms)) admitted += 1;
        if (next % 100 === 0) void engine.tick();
        await yieldToIo();
      }
    };
    await Promise.all(engines.flatMap((engine) => Array.from({ length: workersPerEngine }, () => worker(engine))));

    expect(admitted).toBe(10_000);
    const during = await counterRow(store.db, LICENSE, "api-calls", periodStartMs("month", T0));
    expect((during?.used ?? 0) + (during?.leased ?? 0) + (during?.stranded ?? 0)).toBeLessThanOrEqual(10_000);
    await Promise.all(engines.map((e) => e.stop()));
    const after = await counterRow(store.db, LICENSE, "api-calls", periodStartMs("month", T0));
    expect(after).toEqual({ used: 10_000, leased: 0, stranded: 0, overage: 0 });
    const settled = engines.reduce((sum, e) => sum + e.stats().unitsSettled, 0);
    expect(settled).toBe(10_000);
    // It was a race: every replica leased and spent, most of them many times.
    for (const e of engines) expect(e.stats().unitsSettled).toBeGreaterThan(0);
    console.info(`[${backend}] units per replica: ${engines.map((e) => `${e.stats().unitsSettled} in ${e.stats().leasesTaken} leases`).join(", ")}`);
    await close();
  }, 120_000);
});
