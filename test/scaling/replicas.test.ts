/**
 * A capacity change reaches Check on every replica: the snapshot loader reads the units Scale
 * holds, and the change NOTIFYs "license:<id>", so a second replica's cache reloads and the
 * seat engine's limit (rule.limit) follows within a second.
 *
 * Level: two independent stores (two pools on PostgreSQL) with their own change listener and
 * licence cache, as two replicas have; the full two-service e2e needs the lead's wiring (see
 * docs/scaling.md, "Wiring").
 */
import { tmpdir } from "node:os";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { createLoadingCache, type LoadingCache } from "../../src/licensing/loading-cache.js";
import type { LicenseSnapshot } from "../../src/licensing/snapshot.js";
import { createCapacityScaler } from "../../src/scaling/capacity-scaler.js";
import { loadScaledLicenseSnapshot } from "../../src/scaling/capacity-snapshot.js";
import { acquireSeatLease } from "../../src/store/leases.js";
import { createStore, type Store } from "../../src/store/database.js";
import { createChangeListener, type ChangeListener } from "../../src/store/notify.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { LICENSE, seedScaling, silentLogger } from "./support.js";

const DELIVERY_MS = 1000;

describe.each(testBackends())("capacity across replicas on %s", (backend) => {
  let store: TestStore;
  let replicaB: Store;
  let listener: ChangeListener;
  let cacheB: LoadingCache<string, LicenseSnapshot>;
  let reloaded: Array<() => void>;

  beforeEach(async () => {
    store = await createTestStore(backend);
    await seedScaling(store.db);
    // Replica B: its own pool on PostgreSQL; PGlite is one process's database, shared.
    replicaB = backend === "postgres" && store.databaseUrl !== undefined
      ? await createStore({ databaseUrl: store.databaseUrl, dataDir: tmpdir(), poolMax: 2 })
      : store;
    reloaded = [];
    cacheB = createLoadingCache({ load: (id: string) => loadScaledLicenseSnapshot(replicaB.db, id), negativeTtlMs: 0, now: Date.now });
    listener = createChangeListener({
      store: replicaB,
      logger: silentLogger,
      onChange: (payload) => {
        if (payload === `license:${LICENSE}`) {
          cacheB.invalidate(LICENSE);
          for (const done of reloaded.splice(0)) done();
        }
      },
      onReconnect: () => cacheB.invalidateAll(),
    });
    await listener.start();
  });
  afterEach(async () => {
    await listener.stop();
    if (replicaB !== store) await replicaB.close();
    await store.drop();
  });

  function nextChange(): Promise<number> {
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no licence change within ${DELIVERY_MS} ms`)), DELIVERY_MS);
      reloaded.push(() => {
        clearTimeout(timer);
        resolve(performance.now() - started);
      });
    });
  }

  async function limitOnB(feature: string): Promise<number | null | undefined> {
    const snapshot = await cacheB.get(LICENSE);
    return snapshot?.entitlements.get(feature)?.find((r) => r.kind === "capacity")?.limit;
  }

  test("a scale-down on replica A is enforced by replica B's seat limit within 1 s", async () => {
    expect(await limitOnB("nodes")).toBe(4);
    const scalerA = createCapacityScaler({ db: store.db, now: Date.now, currency: "EUR", logger: silentLogger });
    const seen = nextChange();
    await scalerA.scale({ licenseId: LICENSE, feature: "nodes", intent: { kind: "desired", units: 2 }, requestId: "", reason: "", caller: "test" });
    const elapsedMs = await seen;
    expect(elapsedMs).toBeLessThan(DELIVERY_MS);
    const limit = await limitOnB("nodes");
    expect(limit).toBe(2);
    // Replica B's seat engine admits at most `limit` instances.
    const nowMs = Date.now();
    const take = (instanceId: string) =>
      acquireSeatLease(replicaB.db, {
        licenseId: LICENSE, feature: "nodes", instanceId, replicaId: "b", limit: limit ?? 0, nowMs, expiresAtMs: nowMs + 60_000,
      });
    expect((await take("i1")).held).toBe(true);
    expect((await take("i2")).held).toBe(true);
    expect((await take("i3")).held).toBe(false);
    // Other entitlements keep their rules' values; the snapshot of another feature is untouched.
    expect(await limitOnB("pool")).toBe(2);
  });

  test("the snapshot overlays only capacity entitlements Scale has set", async () => {
    const before = await loadScaledLicenseSnapshot(store.db, LICENSE);
    expect(before?.entitlements.get("api.calls")?.[0]?.limit).toBe(1000);
    expect(before?.entitlements.get("nodes")?.[0]?.limit).toBe(4);
    expect(await loadScaledLicenseSnapshot(store.db, "nobody")).toBeUndefined();
  });
});
