import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { FakeClock, replicaHandles, seatRule, seedLicense, testEngine, truncateCounters } from "./support.js";

const LICENSE = "lic-seats";

describe.each(testBackends())("seat leases on %s", (backend) => {
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

  it.each(["seats", "capacity"] as const)("%s: N+1 instances racing on two engines leave exactly N held", async (kind) => {
    const rule = seatRule(5, kind);
    const { handles, close } = await replicaHandles(store, 2);
    const engines = handles.map((db, i) => testEngine(db, clock, `seat-replica-${i}`));
    await Promise.all(engines.map((e) => e.start()));
    const views = await Promise.all(
      Array.from({ length: 6 }, (_, i) => engines[i % 2]!.acquireSeat(LICENSE, rule, `instance-${i}`, clock.ms)),
    );
    expect(views.filter((v) => v.held)).toHaveLength(5);
    const denied = views.find((v) => !v.held);
    expect(denied?.inUse).toBe(5);
    expect(denied?.nextExpiryMs).toBe(clock.ms + 60_000);
    const live = await store.db.selectFrom("seat_leases").select("instance_id").where("feature", "=", rule.feature).execute();
    expect(live).toHaveLength(5);
    await Promise.all(engines.map((e) => e.stop()));
    await close();
  });

  it("a seat frees seatTtlMs after its instance's last Check; Checks renew it in memory, written in one statement", async () => {
    const rule = seatRule(1);
    const a = testEngine(store.db, clock, "a");
    const b = testEngine(store.db, clock, "b");
    await a.start();
    await b.start();
    expect((await a.acquireSeat(LICENSE, rule, "laptop", clock.ms)).held).toBe(true);
    // The same instance through the other replica keeps its seat (a renewal, not a second seat).
    expect((await b.acquireSeat(LICENSE, rule, "laptop", clock.ms)).held).toBe(true);
    expect((await b.acquireSeat(LICENSE, rule, "desktop", clock.ms)).held).toBe(false);

    clock.advance(40_000);
    expect(a.seat(LICENSE, rule, "laptop", clock.ms).held).toBe(true);
    a.commit(LICENSE, [{ kind: "seat", rule, instanceId: "laptop" }], clock.ms); // a Check at +40 s
    const before = a.stats().statements;
    await a.flush();
    expect(a.stats().statements - before).toBe(1);
    expect(a.stats().seatRenewals).toBe(1);

    clock.advance(30_000); // +70 s: alive only thanks to the renewal
    expect((await b.acquireSeat(LICENSE, rule, "desktop", clock.ms)).held).toBe(false);
    clock.advance(31_000); // +101 s: 61 s after the last Check
    expect(a.seat(LICENSE, rule, "laptop", clock.ms).held).toBe(false);
    expect((await b.acquireSeat(LICENSE, rule, "desktop", clock.ms)).held).toBe(true);
    await a.stop();
    await b.stop();
  });
});
