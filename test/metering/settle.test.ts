/**
 * Reported usage and the quota engine together: reported units lower what the next Checks may
 * take; reservations made by Checks are settled by Reports (less, more, in either order),
 * released on expiry, and a release that finds the Check's units not yet settled is retried.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Metering } from "../../src/metering/metering.js";
import type { LicenseSnapshot } from "../../src/licensing/snapshot.js";
import { loadLicenseSnapshot } from "../../src/store/licenses.js";
import { checkQuota, testEngine, type TestEngine } from "../engine/support.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { FakeClock, counter, createTestMetering, report, seedLicence } from "./support.js";

const NOV = Date.UTC(2026, 10, 1);
const MIN = 60_000;

describe.each(testBackends())("quotas and reservations on %s", (backend) => {
  let store: TestStore;
  let metering: Metering;
  let engine: TestEngine;
  let snapshot: LicenseSnapshot;
  let spoolDir: string;
  const clock = new FakeClock();

  beforeAll(async () => {
    store = await createTestStore(backend);
    spoolDir = await mkdtemp(join(tmpdir(), "metering-spool-"));
    await seedLicence(store.db, "lic-r", [
      { feature: "llm", kind: "quota", limit: 10_000, period: "month", overage: "allow_and_bill", unitPrice: 2 },
      { feature: "calls", kind: "quota", limit: 1000, period: "month", overage: "block" },
    ]);
    const loaded = await loadLicenseSnapshot(store.db, "lic-r");
    if (loaded === undefined) throw new Error("seeded licence missing");
    snapshot = loaded;
    ({ metering } = createTestMetering(store.db, clock, spoolDir));
    await metering.start();
    engine = testEngine(store.db, clock, "replica-1");
    await engine.start();
  });
  afterAll(async () => {
    await engine.stop();
    await metering.stop();
    await store.drop();
    await rm(spoolDir, { recursive: true, force: true });
  });

  const rule = (feature: string) => {
    const found = snapshot.entitlements.get(feature)?.find((r) => r.kind === "quota");
    if (found === undefined) throw new Error(`no quota for ${feature}`);
    return found;
  };

  /** A Check of `quantity` with an operation id, as check.ts does it: consume, then record. */
  async function checkWithOperation(feature: string, operationId: string, quantity: number): Promise<void> {
    expect(await checkQuota(engine, "lic-r", rule(feature), clock.ms, quantity)).toBe(true);
    metering.reservations.record(snapshot, feature, operationId, quantity, clock.ms);
  }

  it("reported usage lowers the next Check's remaining, across replicas through the counter row", async () => {
    await report(metering, [{ id: "calls-900", licenseId: "lic-r", feature: "calls", quantity: 900 }]);
    expect(await checkQuota(engine, "lic-r", rule("calls"), clock.ms, 1)).toBe(true);
    expect(engine.quota("lic-r", rule("calls"), clock.ms).remaining).toBe(99);
    // 99 left cluster-wide: a Check for 100 is denied.
    expect(await checkQuota(engine, "lic-r", rule("calls"), clock.ms, 100)).toBe(false);
    await engine.flush();
  });

  it("reported usage past a block limit still counts as used; new leases grant nothing and nothing goes negative", async () => {
    await report(metering, [{ id: "calls-500", licenseId: "lic-r", feature: "calls", quantity: 500 }]);
    await engine.flush();
    const row = await counter(store.db, "lic-r", "calls", NOV);
    expect(row?.used).toBeGreaterThan(1000);
    // Another replica (fresh memory) asks Postgres: nothing is left to lease. (Units a replica
    // leased before the report stay spendable: about one second of its traffic.)
    const other = testEngine(store.db, clock, "replica-2");
    await other.start();
    expect(await checkQuota(other, "lic-r", rule("calls"), clock.ms, 1)).toBe(false);
    expect(other.quota("lic-r", rule("calls"), clock.ms).remaining).toBe(0);
    await other.stop();
    const after = await counter(store.db, "lic-r", "calls", NOV);
    expect(after?.used).toBe(row?.used);
  });

  it("settling with less than reserved releases the difference", async () => {
    await checkWithOperation("llm", "op-less", 100);
    await engine.flush();
    await metering.flushReservations();
    expect(await counter(store.db, "lic-r", "llm", NOV)).toEqual({ used: 100, overage: 0 });
    const answer = await report(metering, [{ id: "ev-less", licenseId: "lic-r", feature: "llm", quantity: 60, operationId: "op-less" }]);
    expect(answer.accepted).toBe(1);
    expect(await counter(store.db, "lic-r", "llm", NOV)).toEqual({ used: 60, overage: 0 });
    // The same Report again settles nothing more.
    expect((await report(metering, [{ id: "ev-less", licenseId: "lic-r", feature: "llm", quantity: 60, operationId: "op-less" }])).duplicates).toBe(1);
    expect(await counter(store.db, "lic-r", "llm", NOV)).toEqual({ used: 60, overage: 0 });
  });

  it("settling with more than reserved consumes the excess", async () => {
    await checkWithOperation("llm", "op-more", 100);
    await engine.flush();
    await metering.flushReservations();
    await report(metering, [{ id: "ev-more", licenseId: "lic-r", feature: "llm", quantity: 150, operationId: "op-more" }]);
    expect(await counter(store.db, "lic-r", "llm", NOV)).toEqual({ used: 60 + 150, overage: 0 });
  });

  it("a Report that arrives before the reservation is written settles the same", async () => {
    await checkWithOperation("llm", "op-early", 100);
    await engine.flush();
    // The Report lands first: its 40 count at once...
    await report(metering, [{ id: "ev-early", licenseId: "lic-r", feature: "llm", quantity: 40, operationId: "op-early" }]);
    expect(await counter(store.db, "lic-r", "llm", NOV)).toEqual({ used: 210 + 100 + 40, overage: 0 });
    // ...and the reservation, when written, releases the Check's 100.
    await metering.flushReservations();
    expect(await counter(store.db, "lic-r", "llm", NOV)).toEqual({ used: 210 + 40, overage: 0 });
  });

  it("an unsettled reservation expires after the TTL and is released; a later Report still counts", async () => {
    await checkWithOperation("llm", "op-expire", 300);
    await engine.flush();
    await metering.flushReservations();
    expect((await counter(store.db, "lic-r", "llm", NOV))?.used).toBe(250 + 300);
    clock.advance(14 * MIN);
    await metering.tick();
    expect((await counter(store.db, "lic-r", "llm", NOV))?.used).toBe(550);
    clock.advance(61_000);
    await metering.tick();
    expect((await counter(store.db, "lic-r", "llm", NOV))?.used).toBe(250);
    expect(metering.stats().reservations.expired).toBe(1);
    await report(metering, [{ id: "ev-late", licenseId: "lic-r", feature: "llm", quantity: 70, operationId: "op-expire" }]);
    expect((await counter(store.db, "lic-r", "llm", NOV))?.used).toBe(320);
  });

  it("a release that finds the Check's units not yet settled is retried until it applies", async () => {
    // A fresh month: the counter starts at 0.
    clock.ms = Date.UTC(2026, 11, 10);
    await checkWithOperation("llm", "op-pending", 500);
    await metering.flushReservations();
    // The engine has not settled the 500 yet: the release of 450 finds 50 (the Report's own).
    await report(metering, [{ id: "ev-pending", licenseId: "lic-r", feature: "llm", quantity: 50, operationId: "op-pending" }]);
    const DEC = Date.UTC(2026, 11, 1);
    await engine.flush();
    clock.advance(11_000);
    await metering.tick();
    expect(await counter(store.db, "lic-r", "llm", DEC)).toEqual({ used: 50, overage: 0 });
    expect(metering.stats().reservations.pendingReleaseUnits).toBe(0);
  });
});
