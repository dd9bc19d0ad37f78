import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { periodStartMs } from "../../src/licensing/engine/period.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { counterRow, FakeClock, leaseAmounts, quotaRule, seedLicense, T0, testEngine, truncateCounters } from "./support.js";

const LICENSE = "lic-stranded";
const MONTH = periodStartMs("month", T0);

describe.each(testBackends())("crash safety on %s", (backend) => {
  let store: TestStore;
  let clock: FakeClock;

  beforeAll(async () => {
    store = await createTestStore(backend);
    await seedLicense(store.db, LICENSE);
  });
  afterAll(() => store.drop());
  beforeEach(async () => {
    await truncateCounters(store.db);
    clock = new FakeClock();
  });

  it("a vanished replica's expired lease becomes stranded and is never granted again", async () => {
    const rule = quotaRule(100);
    const dead = testEngine(store.db, clock, "dead");
    const alive = testEngine(store.db, clock, "alive");
    await dead.start();
    await alive.start();
    await dead.refillQuota(LICENSE, rule, 40, clock.ms);
    dead.commit(LICENSE, [{ kind: "quota", rule, quantity: 15, overage: 0 }], clock.ms); // admitted, never settled
    // `dead` crashes: no stop(), no more heartbeats. `alive` heartbeats on.
    clock.advance(20_000);
    await alive.heartbeat();
    expect(await leaseAmounts(store.db, LICENSE)).toEqual({ dead: 40 }); // replica gone, lease not yet expired
    clock.advance(11_000);
    await alive.heartbeat();
    expect(alive.stats().unitsStranded).toBe(40);
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toEqual({ used: 0, leased: 0, stranded: 40, overage: 0 });
    expect(await leaseAmounts(store.db, LICENSE)).toEqual({});
    const view = await alive.refillQuota(LICENSE, rule, 100, clock.ms);
    expect(view.localAvailable).toBe(60);
    expect(view.exhausted).toBe(true);
    await alive.stop();
  });

  it("a replica that pauses past its lease stops spending it, and its late settlement moves consumed units from stranded to used", async () => {
    const rule = quotaRule(100);
    const slow = testEngine(store.db, clock, "slow");
    const sweeper = testEngine(store.db, clock, "sweeper");
    await slow.start();
    await sweeper.start();
    await slow.refillQuota(LICENSE, rule, 40, clock.ms);
    slow.commit(LICENSE, [{ kind: "quota", rule, quantity: 15, overage: 0 }], clock.ms);
    clock.advance(31_000);
    await sweeper.heartbeat();
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toMatchObject({ leased: 0, stranded: 40 });
    // Back from its pause, `slow` no longer trusts the lease (it may have been swept).
    expect(slow.quota(LICENSE, rule, clock.ms).localAvailable).toBe(0);
    await slow.flush();
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toEqual({ used: 15, leased: 0, stranded: 25, overage: 0 });
    await slow.stop();
    await sweeper.stop();
  });

  it("a restart under the same replica id strands what the earlier process leased", async () => {
    const rule = quotaRule(100);
    const first = testEngine(store.db, clock, "pod-0");
    await first.start();
    await first.refillQuota(LICENSE, rule, 30, clock.ms);
    // Crash, then a new process with the same id.
    const second = testEngine(store.db, clock, "pod-0");
    await second.start();
    expect(await counterRow(store.db, LICENSE, "api-calls", MONTH)).toEqual({ used: 0, leased: 0, stranded: 30, overage: 0 });
    expect(second.logger.entries.some((e) => e.level === "warn" && /stranded/.test(e.msg))).toBe(true);
    await second.stop();
  });
});
